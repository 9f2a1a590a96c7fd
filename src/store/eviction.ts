import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { BlobStore } from './blob-store.js';
import type { BlobRow, IndexDb } from './index-db.js';

export interface EvictOptions {
  /** Bytes to free; eviction stops once this many are gone. */
  bytes: number;
  /** Blobs being fetched or served right now: never evicted. */
  isBusy?: (digest: string) => boolean;
  /** Rows per transaction; between batches requests get the event loop back. */
  batchSize?: number;
  onEvicted?: (row: BlobRow) => void;
}

export interface EvictResult {
  count: number;
  bytes: number;
}

const DEFAULT_BATCH = 64;
const UNLINK_CONCURRENCY = 4;

/**
 * Evicts least recently used layers and configs until `bytes` are freed, skipping pinned and
 * busy blobs, then removes manifests that have no config or layer stored under them any more.
 *
 * Each batch first deletes the rows, so no new request finds those blobs, then unlinks the
 * files. A crash in between leaves files without rows, which start-up recovery verifies and
 * takes back: nothing is lost or served unverified. Work is split into small transactions with
 * a yield between them, so a large eviction does not stall requests.
 */
export async function evict(
  index: IndexDb,
  store: BlobStore,
  options: EvictOptions,
): Promise<EvictResult> {
  const batchSize = options.batchSize ?? DEFAULT_BATCH;
  index.flushTouches();
  const pinned = index.pinnedDigests();
  const isBusy = options.isBusy ?? (() => false);
  const result: EvictResult = { count: 0, bytes: 0 };
  let cursor = { last_access: -1, digest: '' };

  while (result.bytes < options.bytes) {
    const page = index.lruPage(cursor, batchSize);
    if (page.length === 0) break;
    cursor = page[page.length - 1]!;
    const victims: BlobRow[] = [];
    for (const row of page) {
      if (result.bytes >= options.bytes) break;
      if (pinned.has(row.digest) || isBusy(row.digest)) continue;
      victims.push(row);
      result.bytes += row.size;
    }
    await remove(index, store, victims, options.onEvicted);
    result.count += victims.length;
    await yieldToLoop();
  }

  // Manifests go with their content; the orphan query looks through whole trees, so an index
  // and its platform manifests (and the tags on them) go in the same pass.
  const orphans = index.orphanManifests().filter((r) => !isBusy(r.digest));
  await remove(index, store, orphans, options.onEvicted);
  result.count += orphans.length;
  result.bytes += orphans.reduce((sum, r) => sum + r.size, 0);
  return result;
}

async function remove(
  index: IndexDb,
  store: BlobStore,
  rows: BlobRow[],
  onEvicted?: (row: BlobRow) => void,
): Promise<void> {
  if (rows.length === 0) return;
  index.db.transaction(() => {
    for (const row of rows) index.deleteBlob(row.digest);
  })();
  for (let i = 0; i < rows.length; i += UNLINK_CONCURRENCY) {
    await Promise.all(rows.slice(i, i + UNLINK_CONCURRENCY).map((r) => store.remove(r.digest)));
  }
  for (const row of rows) onEvicted?.(row);
}
