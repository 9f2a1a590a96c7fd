import { createHash, randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';

import { BlobStore } from '../../src/store/blob-store.js';
import { IndexDb } from '../../src/store/index-db.js';
import { INDEX_FILE } from '../../src/store/recovery.js';

export interface FillSpec {
  /** Blobs clients keep asking for: the newest, so eviction reaches them last. */
  hot: number;
  /** Groups of cold blobs, oldest group first: one gc round evicts one group. */
  tiers: number;
  perTier: number;
  blobSize: number;
  /** The upstream and repository every blob counts as verified for. */
  upstream: string;
  repo: string;
}

export interface Filled {
  hot: string[];
  tiers: string[][];
}

const WRITE_CONCURRENCY = 32;

/**
 * Fills a mirror's data folder with many small cached blobs before the mirror starts: files
 * where the store keeps them and index rows as if each had been fetched for `repo`. Pulling
 * tens of thousands of blobs through a mirror would take minutes; this takes seconds. The
 * files skip the store's fsync, which only matters for a crash, not for a benchmark.
 */
export async function fillStore(dataDir: string, spec: FillSpec): Promise<Filled> {
  const store = new BlobStore(dataDir);
  await store.init();
  const make = (n: number) => Array.from({ length: n }, () => randomBytes(spec.blobSize));
  const hot = make(spec.hot);
  const tiers = Array.from({ length: spec.tiers }, () => make(spec.perTier));

  const digests = new Map<Buffer, string>();
  const all = [...tiers.flat(), ...hot];
  for (const body of all) digests.set(body, `sha256:${sha256(body)}`);
  let next = 0;
  const writer = async () => {
    while (next < all.length) {
      const body = all[next++]!;
      const path = store.path(digests.get(body)!);
      await mkdir(dirname(path), { recursive: true });
      await writeFile(path, body);
    }
  };
  await Promise.all(Array.from({ length: WRITE_CONCURRENCY }, writer));

  const index = new IndexDb(join(dataDir, INDEX_FILE));
  try {
    // Cold blobs were last used a day ago, one millisecond apart, in tier order; hot ones now.
    let lastAccess = Date.now() - 86_400_000;
    const record = (body: Buffer, used: number) => {
      const digest = digests.get(body)!;
      index.putBlob(digest, body.length, null, used);
      index.addRepo(digest, spec.upstream, spec.repo);
    };
    index.db.transaction(() => {
      for (const body of tiers.flat()) record(body, lastAccess++);
      for (const body of hot) record(body, Date.now());
    })();
  } finally {
    index.close();
  }
  return {
    hot: hot.map((b) => digests.get(b)!),
    tiers: tiers.map((tier) => tier.map((b) => digests.get(b)!)),
  };
}

function sha256(data: Buffer): string {
  return createHash('sha256').update(data).digest('hex');
}
