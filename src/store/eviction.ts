import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { BlobStore } from './blob-store.js';
import type { BlobRow, IndexDb } from './index-db.js';

export interface EvictOptions {
  /** Bytes to free; eviction stops once this many are gone. */
  bytes: number;
  /** Blobs being fetched or served right now: never evicted. */
  isBusy?: (digest: string) => boolean;
  /**
   * Called, in the same turn as the last check, for each file about to be unlinked; the
   * returned function is called once it is gone. A fetch of that digest installs its file
   * only after, so an unlink queued behind other disk work cannot take a fresh file.
   */
  onUnlink?: (digest: string) => () => void;
  /** Rows per transaction; between batches requests get the event loop back. */
  batchSize?: number;
  /** How long, in ms, a manifest with nothing stored under it is kept after its last use. */
  orphanGraceMs?: number;
  onEvicted?: (row: BlobRow) => void;
}

export interface EvictResult {
  count: number;
  bytes: number;
}

const DEFAULT_BATCH = 64;
const UNLINK_CONCURRENCY = 4;
/**
 * A client pulls the manifest first and its config and layers after; until the first of them
 * is stored the manifest has nothing under it and looks orphaned. Dropping it then would drop
 * its tag too and make the client's pull fetch it again. Clients ask for the config (small)
 * right after the manifest, so ten minutes covers a slow pull with room to spare, while a
 * manifest whose content was evicted still goes within the same pass or one soon after.
 */
export const ORPHAN_GRACE_MS = 10 * 60_000;

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
  const isBusy = options.isBusy ?? (() => false);
  const result: EvictResult = { count: 0, bytes: 0 };
  let cursor = { last_access: -1, digest: '' };
  index.flushTouches();

  while (result.bytes < options.bytes) {
    const page = index.lruPage(cursor, batchSize);
    if (page.length === 0) break;
    cursor = page[page.length - 1]!;

    // Pins are read in the transaction that deletes the rows, not once per pass: a pin taken
    // while a long pass runs, here or by another process, is seen before its blob goes.
    const victims = index.db.transaction(() => {
      const chosen: BlobRow[] = [];
      for (const row of page) {
        if (result.bytes >= options.bytes) break;
        if (isBusy(row.digest) || index.isPinned(row.digest)) continue;
        index.deleteBlob(row.digest);
        chosen.push(row);
        result.bytes += row.size;
      }
      return chosen;
    }).immediate();
    await unlink(index, store, victims, isBusy, options.onUnlink);
    for (const row of victims) options.onEvicted?.(row);
    result.count += victims.length;
    await yieldToLoop();
  }

  // Manifests go with their content; the orphan query looks through whole trees, so an index
  // and its platform manifests (and the tags on them) go in the same pass.
  const idleSince = Date.now() - (options.orphanGraceMs ?? ORPHAN_GRACE_MS);
  const orphans = index.db.transaction(() => {
    const rows = index.orphanManifests(idleSince).filter((r) => !isBusy(r.digest));
    for (const row of rows) index.deleteBlob(row.digest);
    return rows;
  }).immediate();
  await unlink(index, store, orphans, isBusy, options.onUnlink);
  for (const row of orphans) options.onEvicted?.(row);
  result.count += orphans.length;
  result.bytes += orphans.reduce((sum, r) => sum + r.size, 0);
  return result;
}

/**
 * Unlinks the files of rows already deleted. A fetch of the same digest may have committed a
 * new file and row during the awaits before: each digest is looked up again just before its
 * unlink, and skipped if it has a row again or is being fetched or served, so a fresh blob is
 * never left as a row without a file.
 */
async function unlink(
  index: IndexDb,
  store: BlobStore,
  rows: BlobRow[],
  isBusy: (digest: string) => boolean,
  onUnlink: (digest: string) => () => void = () => () => undefined,
): Promise<void> {
  for (let i = 0; i < rows.length; i += UNLINK_CONCURRENCY) {
    const slice = rows.slice(i, i + UNLINK_CONCURRENCY);
    const gone = slice.filter((r) => !isBusy(r.digest) && index.getBlob(r.digest) === undefined);
    await Promise.all(gone.map(async (r) => {
      const done = onUnlink(r.digest);
      try {
        await store.remove(r.digest);
      } finally {
        done();
      }
    }));
  }
}
