import { setTimeout as sleep } from 'node:timers/promises';

export interface WaitOptions {
  /** What is awaited, for the error message. */
  what: string;
  timeoutMs?: number;
  intervalMs?: number;
  /** Extra text for the timeout error, e.g. the tail of a log. */
  details?: () => string | Promise<string>;
  /** Thrown early instead of waiting out the timeout, e.g. when the process died. */
  abort?: () => Error | undefined;
}

/**
 * Polls `check` until it returns a value other than undefined/false.
 * Errors thrown by `check` count as "not yet": a server that is still starting
 * refuses connections, and that is exactly what we are waiting out.
 */
export async function waitUntil<T>(
  check: () => Promise<T | undefined | false> | T | undefined | false,
  options: WaitOptions,
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 30_000;
  const intervalMs = options.intervalMs ?? 50;
  const deadline = Date.now() + timeoutMs;
  let lastError: unknown;

  for (;;) {
    const aborted = options.abort?.();
    if (aborted) throw aborted;
    try {
      const value = await check();
      if (value !== undefined && value !== false) return value;
    } catch (err) {
      lastError = err;
    }
    if (Date.now() >= deadline) break;
    await sleep(intervalMs);
  }

  const last = lastError instanceof Error ? ` (last error: ${lastError.message})` : '';
  const details = options.details ? `\n${await options.details()}` : '';
  throw new Error(`timed out after ${timeoutMs} ms waiting for ${options.what}${last}${details}`);
}
