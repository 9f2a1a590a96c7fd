import { setTimeout as sleep } from 'node:timers/promises';
import { WharfError, toWharfError, type ErrorCode } from '../errors.js';

/** Failures that another attempt cannot fix: the answer would be the same. */
const FINAL: ReadonlySet<ErrorCode> = new Set<ErrorCode>([
  'WHARF_BAD_USAGE',
  'WHARF_CONFIG_INVALID',
  'WHARF_NAME_INVALID',
  'WHARF_REFERENCE_INVALID',
  'WHARF_DIGEST_INVALID',
  'WHARF_MANIFEST_UNKNOWN',
  'WHARF_NAME_UNKNOWN',
  'WHARF_PLATFORM_UNAVAILABLE',
  'WHARF_UPSTREAM_UNAUTHORIZED',
  'WHARF_UPSTREAM_DENIED',
  'WHARF_UPSTREAM_DIGEST_MISMATCH',
]);

export function isRetryable(err: WharfError): boolean {
  return !FINAL.has(err.code);
}

export interface RetryOptions {
  /** Attempts after the first. */
  retries: number;
  /** Wait before the first retry, ms; doubled for each one after. */
  backoffMs: number;
  maxBackoffMs?: number;
  /** The whole job, all attempts and waits, must end within this, ms. */
  deadlineMs: number;
  /** Stops everything (wharf is shutting down); its reason is rethrown as it is. */
  signal?: AbortSignal;
  /** What the deadline is for, in its error message. */
  what: string;
  onRetry?: (attempt: number, delayMs: number, err: WharfError) => void;
}

/**
 * Runs `job` until it succeeds, fails for good, runs out of retries or passes its deadline.
 * The deadline aborts the attempt in flight through the signal it is given, so a pull that
 * hangs does not hold a warm cycle's slot past it.
 */
export async function withRetries<T>(
  job: (signal: AbortSignal) => Promise<T>,
  options: RetryOptions,
): Promise<T> {
  const deadline = AbortSignal.timeout(options.deadlineMs);
  const signal = options.signal ? AbortSignal.any([options.signal, deadline]) : deadline;
  const overDeadline = () =>
    new WharfError('WHARF_DEADLINE_EXCEEDED', `${options.what} did not finish within ` +
      `${Math.round(options.deadlineMs / 1000)} s`, {
      hint: 'raise deadline in the warm config, or check the mirror and network speed',
    });

  for (let attempt = 1; ; attempt++) {
    try {
      return await job(signal);
    } catch (err) {
      if (options.signal?.aborted) throw options.signal.reason ?? err;
      if (deadline.aborted) throw overDeadline();
      const error = toWharfError(err);
      if (!isRetryable(error) || attempt > options.retries) throw error;

      // Jitter spreads the retries of a fleet that failed together, so they do not all
      // come back at the same second.
      const cap = options.maxBackoffMs ?? 300_000;
      const base = Math.min(options.backoffMs * 2 ** (attempt - 1), cap);
      const delayMs = Math.round(base * (0.8 + Math.random() * 0.4));
      options.onRetry?.(attempt, delayMs, error);
      try {
        await sleep(delayMs, undefined, { signal });
      } catch {
        if (options.signal?.aborted) throw options.signal.reason ?? err;
        throw overDeadline();
      }
    }
  }
}

/** Runs `fn` over `items` with at most `limit` at a time; results in the items' order. */
export async function mapLimit<T, R>(
  items: readonly T[],
  limit: number,
  fn: (item: T, index: number) => Promise<R>,
): Promise<R[]> {
  const results = new Array<R>(items.length);
  let next = 0;
  const worker = async () => {
    while (next < items.length) {
      const index = next++;
      results[index] = await fn(items[index]!, index);
    }
  };
  await Promise.all(Array.from({ length: Math.min(limit, items.length) }, worker));
  return results;
}
