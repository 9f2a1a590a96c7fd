import { setPriority } from 'node:os';

import { Child } from './child.js';

import type { PullJob, PullOutcome } from './pull-worker.js';

/** The clients' niceness: below the mirror, the origin and the relay (see start()). */
export const CLIENT_NICE = 10;

export interface HerdRun {
  /** From the moment the jobs were sent until the last client finished. */
  wallMs: number;
  outcomes: PullOutcome[];
  failures: number;
}

/**
 * Client processes started once and reused, so process start-up and module loading stay out
 * of every timing; a pull sends its job to several of them at the same instant.
 */
export class PullPool {
  private constructor(private readonly clients: Child<PullJob, PullOutcome>[]) {}

  static async start(size: number): Promise<PullPool> {
    const module = new URL('./pull-worker.ts', import.meta.url);
    const start = (i: number) => Child.start<PullJob, PullOutcome>(module, `puller ${i}`);
    const clients = await Promise.all(Array.from({ length: size }, (_, i) => start(i)));
    // On a fleet the clients are other machines. Here they share the mirror's cores, and at
    // the same priority eight hashing clients starve the relay that stands for the origin's
    // link and the mirror itself, so a run would measure this machine's scheduler rather
    // than the mirror. Lowered, they still get every cycle the others leave, for either mirror.
    for (const client of clients) setPriority(client.pid, CLIENT_NICE);
    return new PullPool(clients);
  }

  get size(): number {
    return this.clients.length;
  }

  /** The client processes' ids, the first `count` of them: those a herd of that size uses. */
  pids(count = this.clients.length): number[] {
    return this.clients.slice(0, count).map((c) => c.pid);
  }

  /** `count` clients pull the same image at once. */
  async herd(count: number, job: PullJob): Promise<HerdRun> {
    if (count > this.clients.length) throw new Error(`pool has ${this.clients.length} clients`);
    const clients = this.clients.slice(0, count);
    // Replies are awaited before any job goes out, so all start within one loop turn.
    const replies = clients.map((c) => c.next());
    const started = performance.now();
    for (const c of clients) c.send(job);
    const outcomes = await Promise.all(replies);
    const wallMs = performance.now() - started;
    return { wallMs, outcomes, failures: outcomes.filter((o) => !o.ok).length };
  }

  async stop(): Promise<void> {
    await Promise.all(this.clients.map((c) => c.stop()));
  }
}
