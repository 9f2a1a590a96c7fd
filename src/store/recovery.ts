import { createReadStream } from 'node:fs';
import { mkdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { WharfError } from '../errors.js';
import type { Logger } from '../log.js';
import { hasher, parseDigest } from '../oci/digest.js';
import { children, parseManifest, type ParsedManifest } from '../oci/manifest.js';
import { MAX_MANIFEST_BYTES } from '../upstream/client.js';
import type { BlobStore } from './blob-store.js';
import { IndexDb } from './index-db.js';

export const INDEX_FILE = 'index.db';

export interface OpenIndexOptions {
  /**
   * Move a corrupt index aside and start an empty one for recovery to fill. Only the mirror
   * does, at its start; a `wharf cache` command beside a running mirror must never.
   */
  rebuild: boolean;
  /**
   * Refuse an index this process can only read. SQLite opens a file it may not write
   * read-only without a word, so the mirror would start, listen, and fail at its first write.
   * `wharf cache` commands that only read work on a store they cannot write.
   */
  writable?: boolean;
}

/**
 * Opens the index. A file SQLite finds corrupt (not a database, a damaged page, a quick_check
 * that is not `ok`) is moved aside and a new one started, which recovery then fills from the
 * blob folder; with `rebuild: false` that is reported instead. Any other failure (the lock
 * held past the busy timeout, no permission, a folder that cannot be opened) is not
 * corruption: it is thrown, and the index is left exactly as it is.
 */
export async function openIndex(
  dataDir: string,
  logger: Logger,
  options: OpenIndexOptions = { rebuild: true, writable: true },
): Promise<IndexDb> {
  const file = join(dataDir, INDEX_FILE);
  let problem: string;
  let index: IndexDb | undefined;
  try {
    index = new IndexDb(file);
    const problems = index.quickCheck();
    if (problems.length === 0) {
      if (options.writable) probeWrite(index);
      return index;
    }
    problem = problems.slice(0, 3).join('; ');
    index.close();
  } catch (err) {
    index?.close();
    if (!isCorruption(err)) throw cannotOpen(file, err);
    problem = (err as Error).message;
  }

  if (!options.rebuild) {
    throw new WharfError('WHARF_STORE_CORRUPT', `the index ${file} is unreadable: ${problem}`, {
      hint: 'restart `wharf serve` on this data folder: it rebuilds the index from the blobs',
      detail: { file },
    });
  }
  const aside = `${file}.corrupt-${Date.now()}`;
  logger.warn({ err: problem, file: aside }, 'index corrupt, rebuilding it');
  await rename(file, aside);
  // The log belongs to the corrupt file: replayed into a new one, it would corrupt that too.
  await rename(`${file}-wal`, `${aside}-wal`).catch(() => undefined);
  await rm(`${file}-shm`, { force: true });
  return new IndexDb(file);
}

/**
 * A write that changes nothing, rolled back: it fails with SQLITE_READONLY when the file,
 * its WAL or its folder is not writable by this user.
 */
function probeWrite(index: IndexDb): void {
  const version = index.db.pragma('user_version', { simple: true }) as number;
  try {
    index.db.exec(`BEGIN IMMEDIATE; PRAGMA user_version = ${version}; ROLLBACK`);
  } catch (err) {
    if (index.db.inTransaction) index.db.exec('ROLLBACK');
    throw err;
  }
}

/** SQLite's own verdicts on a damaged file; anything else says nothing about the file. */
function isCorruption(err: unknown): boolean {
  const code = (err as { code?: unknown }).code;
  return (
    typeof code === 'string' && (code === 'SQLITE_NOTADB' || code.startsWith('SQLITE_CORRUPT'))
  );
}

function cannotOpen(file: string, err: unknown): WharfError {
  const code = String((err as { code?: unknown }).code ?? '');
  const why = `${(err as Error).message}${code ? ` (${code})` : ''}`;
  let hint = 'check the data folder and its disk; the index was left as it is';
  if (code.startsWith('SQLITE_BUSY') || code.startsWith('SQLITE_LOCKED')) {
    hint = 'another process holds the index locked; try again, or look for a stuck wharf process';
  } else if (/^SQLITE_(CANTOPEN|PERM|READONLY|AUTH)/.test(code)) {
    hint = `make ${dirname(file)} and everything in it readable and writable by the user ` +
      'wharf runs as, or point the mirror at another data folder';
  }
  return new WharfError('WHARF_STATE_UNWRITABLE', `cannot open the index ${file}: ${why}`, {
    cause: err,
    hint,
    detail: { file, sqlite: code || undefined },
  });
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

/**
 * Moves a corrupt blob out of the store, keeping it for inspection. Undefined when the file
 * is gone already: a running mirror may evict it between the check and the move.
 */
export async function quarantine(store: BlobStore, digest: string): Promise<string | undefined> {
  const dir = join(store.root, 'quarantine');
  await mkdir(dir, { recursive: true });
  const target = join(dir, `${digest.replace(':', '-')}-${Date.now()}`);
  try {
    await rename(store.path(digest), target);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
    throw err;
  }
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
      if ((await quarantine(store, digest)) === undefined) continue;
      report.filesQuarantined++;
      logger.warn({ digest }, 'quarantined a blob that does not match its digest');
      continue;
    }
    const { size } = await stat(path);
    const manifest = await readManifest(path, size);
    index.db.transaction(() => {
      index.putBlob(digest, size, manifest?.mediaType ?? null);
      // Without its references a recovered manifest would look like an orphan, and the next
      // eviction would drop it with its layers still stored.
      if (manifest) index.addRefs(digest, children(manifest).map((d) => d.digest));
    })();
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
async function readManifest(path: string, size: number): Promise<ParsedManifest | undefined> {
  if (size > MAX_MANIFEST_BYTES) return undefined;
  const body = await readFile(path);
  if (body[0] !== 0x7b) return undefined; // not '{': a layer, not JSON
  try {
    return parseManifest(body);
  } catch {
    return undefined;
  }
}
