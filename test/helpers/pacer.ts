import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Paces bytes to a rate, shared by everyone who calls `take`: each caller reserves
 * its bytes on one virtual timeline and waits until that slot comes. A timer fires
 * late by a millisecond or so; the timeline does not drift with it, so the average
 * stays exact and several connections split the rate between them.
 */
export class Pacer {
  private nextFree = 0;

  /**
   * @param bytesPerSecond undefined or 0 means unlimited.
   * @param burstMs how much idle time may be spent later as a burst.
   */
  constructor(public bytesPerSecond?: number, private readonly burstMs = 20) {}

  async take(bytes: number): Promise<void> {
    const rate = this.bytesPerSecond;
    if (!rate) return;
    const now = performance.now();
    this.nextFree = Math.max(this.nextFree, now - this.burstMs) + (bytes / rate) * 1000;
    const wait = this.nextFree - now;
    if (wait >= 1) await sleep(wait);
  }
}
