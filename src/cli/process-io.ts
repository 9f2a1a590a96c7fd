/** What a command reads and writes, so tests can run it without a child process. */
export interface CommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

/**
 * Runs a command with this process's streams and environment, aborting it on SIGINT or
 * SIGTERM so it can stop its pulls and report, then sets the exit status it returns.
 */
export async function runWithProcessIo(run: (io: CommandIo) => Promise<number>): Promise<void> {
  const controller = new AbortController();
  const stop = () => controller.abort();
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    process.exitCode = await run({
      stdout: process.stdout,
      stderr: process.stderr,
      env: process.env,
      signal: controller.signal,
    });
  } finally {
    process.off('SIGINT', stop);
    process.off('SIGTERM', stop);
  }
}
