import { spawn, type ChildProcess } from 'node:child_process';
import { createWriteStream } from 'node:fs';
import { open } from 'node:fs/promises';

import { registerCleanup } from './tmp.js';

export interface StartProcessOptions {
  /** Short name for error messages, e.g. "docker-registry". */
  name: string;
  command: string;
  args: string[];
  /** stdout and stderr both go here, appended. */
  logFile: string;
  cwd?: string;
  env?: NodeJS.ProcessEnv;
}

export interface Exit {
  code: number | null;
  signal: NodeJS.Signals | null;
}

export interface ProcessHandle {
  readonly name: string;
  readonly pid: number;
  readonly logFile: string;
  /** Resolves when the process has exited (never rejects). */
  readonly exited: Promise<Exit>;
  /** The exit, once it happened. */
  exit(): Exit | undefined;
  /** The last lines of the log file. */
  logTail(lines?: number): Promise<string>;
  /** SIGTERM, then SIGKILL after `graceMs`; waits for the exit. Idempotent. */
  stop(graceMs?: number): Promise<Exit>;
}

// Children run in their own process group (detached) so a stop reaches their
// helpers too; if the test process dies without cleanup, this kills them anyway
// rather than leaving registries and dockerds behind for the next run.
const running = new Set<ChildProcess>();
const orphans = new Set<number>();
const killAll = () => {
  for (const child of running) killGroup(child, 'SIGKILL');
  for (const pid of orphans) killPid(pid, 'SIGKILL');
};
process.once('exit', killAll);
// 'exit' does not run when a signal ends the process (Ctrl-C, a runner's timeout):
// kill the children, then let the signal do what it would have done.
for (const signal of ['SIGINT', 'SIGTERM'] as const) {
  process.once(signal, () => {
    killAll();
    process.kill(process.pid, signal);
  });
}

/**
 * Kills `pid` when the test process exits, for a grandchild that left our process
 * group (dockerd's containerd). Returns a function that forgets it again.
 */
export function killOnExit(pid: number): () => void {
  orphans.add(pid);
  return () => orphans.delete(pid);
}

/** Sends a signal; false when there is no such process. */
export function killPid(pid: number, signal: NodeJS.Signals | 0): boolean {
  try {
    process.kill(pid, signal);
    return true;
  } catch {
    return false;
  }
}

/** Starts a long-running program with its output captured in `logFile`. */
export async function startProcess(options: StartProcessOptions): Promise<ProcessHandle> {
  const log = createWriteStream(options.logFile, { flags: 'a' });
  await new Promise<void>((resolve, reject) => {
    log.once('open', () => resolve());
    log.once('error', reject);
  });

  const child = spawn(options.command, options.args, {
    cwd: options.cwd,
    env: options.env ?? process.env,
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  if (child.pid !== undefined) running.add(child);
  child.stdout!.pipe(log, { end: false });
  child.stderr!.pipe(log, { end: false });

  let exitInfo: Exit | undefined;
  const exited = new Promise<Exit>((resolve) => {
    const finish = (info: Exit) => {
      if (exitInfo) return;
      exitInfo = info;
      running.delete(child);
      log.end();
      resolve(info);
    };
    child.once('exit', (code, signal) => finish({ code, signal }));
    // spawn failures (ENOENT) emit 'error' and never 'exit'
    child.once('error', (err) => {
      log.write(`\n[spawn error] ${err.message}\n`);
      finish({ code: null, signal: null });
    });
  });
  if (child.pid === undefined) {
    await exited;
    throw new Error(`${options.name}: could not start ${options.command}\n` +
      (await tailOf(options.logFile, 20)));
  }

  let stopping: Promise<Exit> | undefined;
  const handle: ProcessHandle = {
    name: options.name,
    pid: child.pid,
    logFile: options.logFile,
    exited,
    exit: () => exitInfo,
    logTail: (lines = 30) => tailOf(options.logFile, lines),
    stop: (graceMs = 10_000) => {
      stopping ??= stopChild(child, exited, () => exitInfo, graceMs);
      return stopping;
    },
  };
  registerCleanup(() => handle.stop());
  return handle;
}

async function stopChild(
  child: ChildProcess,
  exited: Promise<Exit>,
  exitInfo: () => Exit | undefined,
  graceMs: number,
): Promise<Exit> {
  if (exitInfo()) {
    // The leader is gone but a helper in its group may remain.
    killGroup(child, 'SIGKILL');
    return exited;
  }
  killGroup(child, 'SIGTERM');
  // An unref'd timer: a pending grace period must not keep the test process alive.
  const timer = setTimeout(() => killGroup(child, 'SIGKILL'), graceMs);
  timer.unref();
  const info = await exited;
  clearTimeout(timer);
  killGroup(child, 'SIGKILL');
  return info;
}

function killGroup(child: ChildProcess, signal: NodeJS.Signals): void {
  if (child.pid === undefined) return;
  try {
    process.kill(-child.pid, signal);
  } catch {
    // ESRCH: the group is already gone.
  }
}

/** The last `lines` lines of a (log) file, or a note that it cannot be read. */
export async function tailOf(file: string, lines: number): Promise<string> {
  try {
    const fh = await open(file, 'r');
    try {
      const { size } = await fh.stat();
      const length = Math.min(size, 64 * 1024);
      const buf = Buffer.alloc(length);
      await fh.read(buf, 0, length, size - length);
      const all = buf.toString('utf8').split('\n');
      return all.slice(-lines - 1).join('\n');
    } finally {
      await fh.close();
    }
  } catch (err) {
    return `(no log: ${(err as Error).message})`;
  }
}

/** Error for a program that failed to become ready, with the tail of its log. */
export async function startupError(handle: ProcessHandle, message: string): Promise<Error> {
  const tail = await handle.logTail(40);
  return new Error(`${handle.name}: ${message}\n--- ${handle.logFile} (tail) ---\n${tail}`);
}
