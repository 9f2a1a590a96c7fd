import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import type { Logger } from '../log.js';
import { hasher, parseDigest } from '../oci/digest.js';
import { parseManifest } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES } from '../upstream/client.js';
import type { BlobStore } from './blob-store.js';
import { IndexDb } from './index-db.js';

export const INDEX_FILE = 'index.db';

/**
 * Opens the index; a file SQLite cannot read (corrupt, truncated, not a database) is moved
 * aside and a new one started, which recovery then fills from the blob folder.
 */
export async function openIndex(dataDir: string, logger: Logger): Promise<IndexDb> {
  const file = join(dataDir, INDEX_FILE);
  try {
    const index = new IndexDb(file);
    index.db.pragma('quick_check');
    return index;
  } catch (err) {
    const aside = `${file}.corrupt-${Date.now()}`;
    logger.warn({ err: (err as Error).message, file: aside }, 'index unreadable, rebuilding it');
    await rename(file, aside).catch(() => undefined);
    await rm(`${file}-wal`, { force: true });
    await rm(`${file}-shm`, { force: true });
    return new IndexDb(file);
  }
}

/** Hashes a stored file; true when it matches the digest it is stored under. */
export async function verifyFile(path: string, digest: string): Promise<boolean> {
  const hash = hasher(parseDigest(digest));
  try {
    await pipeline(createReadStream(path), hash);
  } catch {
    return false;
  }
  return `${parseDigest(digest).algorithm}:${hash.digest('hex')}` === digest;
}

/** Moves a corrupt blob out of the store, keeping it for inspection. */
export async function quarantine(store: BlobStore, digest: string): Promise<string> {
  const dir = join(store.root, 'quarantine');
  await mkdir(dir, { recursive: true });
  const target = join(dir, `${digest.replace(':', '-')}-${Date.now()}`);
  await rename(store.path(digest), target);
  return target;
}

export interface RecoveryReport {
  tempFilesRemoved: number;
  rowsDropped: number;
  filesAdded: number;
  filesQuarantined: number;
}

/**
 * Makes index and blob folder agree after a crash or a lost index: leftover temp files go,
 * rows whose file is gone are dropped, and files without a row are verified and taken back
 * (or quarantined when they do not match their name). A file recovered this way is bound to
 * no repository, so it is served again only after its upstream confirms a repository has it.
 */
export async function recover(
  store: BlobStore,
  index: IndexDb,
  logger: Logger,
): Promise<RecoveryReport> {
  const report: RecoveryReport = {
    tempFilesRemoved: await store.sweepTemp(),
    rowsDropped: 0,
    filesAdded: 0,
    filesQuarantined: 0,
  };

  const rows = new Map(index.allBlobs().map((r) => [r.digest, r]));
  const onDisk = new Set<string>();
  for await (const digest of store.list()) {
    try {
      parseDigest(digest);
    } catch {
      continue; // not a blob wharf wrote; leave it alone
    }
    onDisk.add(digest);
    if (rows.has(digest)) continue;
    const path = store.path(digest);
    if (!(await verifyFile(path, digest))) {
      await quarantine(store, digest);
      report.filesQuarantined++;
      logger.warn({ digest }, 'quarantined a blob that does not match its digest');
      continue;
    }
    const { size } = await stat(path);
    index.putBlob(digest, size, await manifestType(path, size));
    report.filesAdded++;
  }

  for (const digest of rows.keys()) {
    if (onDisk.has(digest)) continue;
    index.deleteBlob(digest);
    report.rowsDropped++;
  }

  if (report.tempFilesRemoved || report.rowsDropped || report.filesAdded || report.filesQuarantined) {
    logger.info({ ...report }, 'store recovered');
  }
  return report;
}

/** A recovered file that is a manifest or index is recorded as one, so it is served as one. */
async function manifestType(path: string, size: number): Promise<string | null> {
  if (size > MAX_MANIFEST_BYTES) return null;
  const body = await readFile(path);
  if (body[0] !== 0x7b) return null; // not '{': a layer, not JSON
  try {
    return parseManifest(body).mediaType;
  } catch {
    return null;
  }
}
