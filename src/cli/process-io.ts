/** What a command reads and writes, so tests can run it without a child process. */
export interface CommandIo {
  stdout: NodeJS.WritableStream;
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  env: NodeJS.ProcessEnv;
  signal?: AbortSignal;
}

/**
 * Runs a command with this process's streams and environment, aborting it on SIGINT,
 * SIGTERM or SIGBREAK so it can stop its pulls and report, then sets the exit status it
 * returns.
 */
export async function runWithProcessIo(run: (io: CommandIo) => Promise<number>): Promise<void> {
  const controller = new AbortController();
  const stop = () => controller.abort();
  // SIGBREAK is Ctrl-Break in a Windows console; elsewhere it never arrives.
  const signals = ['SIGINT', 'SIGTERM', 'SIGBREAK'] as const;
  for (const name of signals) process.once(name, stop);
  try {
    process.exitCode = await run({
      stdout: process.stdout,
      stderr: process.stderr,
      env: process.env,
      signal: controller.signal,
    });
  } finally {
    for (const name of signals) process.off(name, stop);
  }
}
