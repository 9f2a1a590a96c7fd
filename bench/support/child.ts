import { fork, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';

import { registerCleanup } from '../../test/helpers/tmp.js';

/**
 * A benchmark client in a process of its own, driven by messages: one request, one reply.
 *
 * Clients run as processes, not worker threads, for two reasons: on two cores a driver that
 * hashes gigabytes in its own event loop would pace the relay and skew every figure, and
 * tsx's loader hooks do not reach worker threads on Node 20, while a forked process gets them
 * from `execArgv`.
 */
export class Child<Request, Reply> {
  private waiting: { resolve: (reply: Reply) => void; reject: (err: Error) => void }[] = [];
  private exited: Error | undefined;

  private constructor(private readonly proc: ChildProcess, readonly name: string) {
    proc.on('message', (msg) => this.waiting.shift()?.resolve(msg as Reply));
    proc.on('exit', (code, signal) => {
      this.exited = new Error(`${name} exited (${signal ?? code})`);
      for (const w of this.waiting.splice(0)) w.reject(this.exited);
    });
  }

  /** Forks `module` and waits for its first message, which says it is loaded and ready. */
  static async start<Request, Reply>(module: URL, name: string): Promise<Child<Request, Reply>> {
    const proc = fork(fileURLToPath(module), [], {
      // The parent runs under `--import tsx`; the child needs the same to load TypeScript.
      execArgv: process.execArgv,
      // Structured clone: latency samples travel as typed arrays, not JSON text.
      serialization: 'advanced',
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    const child = new Child<Request, Reply>(proc, name);
    registerCleanup(() => child.stop());
    await child.next();
    return child;
  }

  get pid(): number {
    return this.proc.pid ?? 0;
  }

  /** Sends a request without waiting; pair it with `next()`. */
  send(request: Request): void {
    if (this.exited) throw this.exited;
    this.proc.send(request as object);
  }

  /** The next message from the child. */
  next(): Promise<Reply> {
    if (this.exited) return Promise.reject(this.exited);
    return new Promise((resolve, reject) => this.waiting.push({ resolve, reject }));
  }

  async ask(request: Request): Promise<Reply> {
    const reply = this.next();
    this.send(request);
    return reply;
  }

  async stop(): Promise<void> {
    if (this.exited) return;
    const gone = new Promise((resolve) => this.proc.once('exit', resolve));
    // Closing the channel is the child's cue to exit; the kill is for one that hangs.
    this.proc.disconnect();
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 5_000);
    await gone;
    clearTimeout(timer);
  }
}

/**
 * The child's side: answers each request with `handle`'s result, one at a time, and exits
 * when the parent goes away, so no client outlives a benchmark that crashed.
 */
export function serve<Request, Reply>(handle: (request: Request) => Promise<Reply>): void {
  let queue = Promise.resolve();
  process.on('message', (msg) => {
    queue = queue.then(async () => {
      process.send!(await handle(msg as Request));
    });
  });
  process.on('disconnect', () => process.exit(0));
  process.send!({ ready: true });
}
