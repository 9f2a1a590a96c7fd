import { constants, createWriteStream, type WriteStream } from 'node:fs';
import { access, mkdir, open, readdir, rename, rm, stat, unlink } from 'node:fs/promises';
import { join } from 'node:path';
import { randomBytes, type Hash } from 'node:crypto';
import { WharfError } from '../errors.js';
import { hasher, parseDigest } from '../oci/digest.js';
import { drained } from '../util/drained.js';

/**
 * Bytes a blob's file stream may hold before its writer is asked to wait. A fetch queues its
 * chunks rather than waiting for each to reach the file: one round trip to the thread pool
 * per chunk would cap the fetch at a chunk per event-loop turn, a turn that a herd of clients
 * makes long.
 */
const WRITE_BUFFER_BYTES = 4 * 1024 * 1024;

/**
 * Content-addressed blobs on disk: `blobs/<alg>/<2 hex>/<hex>`. A blob is written to `tmp/`,
 * hashed as it is written, flushed, and renamed into place only when its digest matches, so
 * whatever sits under `blobs/` is complete and verified, even after a crash.
 */
export class BlobStore {
  readonly blobsDir: string;
  readonly tmpDir: string;

  constructor(readonly root: string) {
    this.blobsDir = join(root, 'blobs');
    this.tmpDir = join(root, 'tmp');
  }

  /**
   * Creates the store's folders, and refuses ones this user cannot write: every blob is
   * written to tmp/ and renamed into blobs/, so without them the mirror could only fail
   * later, request by request.
   */
  async init(): Promise<void> {
    for (const dir of [this.blobsDir, this.tmpDir]) {
      try {
        await mkdir(dir, { recursive: true });
        await access(dir, constants.W_OK);
      } catch (err) {
        throw unwritableFolder(dir, err);
      }
    }
  }

  /** The path of a blob; the digest is parsed first, so nothing else reaches the filesystem. */
  path(digest: string): string {
    const d = parseDigest(digest);
    return join(this.blobsDir, d.algorithm, d.hex.slice(0, 2), d.hex);
  }

  async size(digest: string): Promise<number | undefined> {
    try {
      return (await stat(this.path(digest))).size;
    } catch {
      return undefined;
    }
  }

  async remove(digest: string): Promise<void> {
    await rm(this.path(digest), { force: true });
  }

  /** Starts writing a blob that must hash to `digest`. */
  async writer(digest: string): Promise<BlobWriter> {
    const tmp = join(this.tmpDir, `${parseDigest(digest).hex.slice(0, 16)}-${randomBytes(6).toString('hex')}`);
    const stream = createWriteStream(tmp, { flags: 'wx', highWaterMark: WRITE_BUFFER_BYTES });
    await new Promise<void>((resolve, reject) => {
      stream.once('open', () => resolve());
      stream.once('error', reject);
    });
    return new BlobWriter(this, digest, tmp, stream);
  }

  /** Removes temp files a crash left behind; they were never committed, so never served. */
  async sweepTemp(): Promise<number> {
    const names = await readdir(this.tmpDir).catch(() => [] as string[]);
    await Promise.all(names.map((n) => rm(join(this.tmpDir, n), { force: true })));
    return names.length;
  }

  /** Every committed blob's digest, for recovery and verification. */
  async *list(): AsyncGenerator<string> {
    for (const alg of await readdir(this.blobsDir).catch(() => [] as string[])) {
      for (const prefix of await readdir(join(this.blobsDir, alg)).catch(() => [] as string[])) {
        for (const hex of await readdir(join(this.blobsDir, alg, prefix)).catch(() => [] as string[])) {
          yield `${alg}:${hex}`;
        }
      }
    }
  }
}

export class BlobWriter {
  readonly tempPath: string;
  private readonly hash: Hash;
  private bytes = 0;
  private closed = false;

  constructor(
    private readonly store: BlobStore,
    readonly digest: string,
    tempPath: string,
    private readonly stream: WriteStream,
  ) {
    this.tempPath = tempPath;
    this.hash = hasher(parseDigest(digest));
  }

  get written(): number {
    return this.bytes;
  }

  /**
   * Queues a chunk without waiting for it to reach the file; `done` is called, in the order
   * of the pushes, once it has (or with the error). Returns false when the caller should
   * wait for `drained()` before pushing more.
   */
  push(chunk: Buffer, done: (err?: Error | null) => void): boolean {
    this.hash.update(chunk);
    this.bytes += chunk.length;
    return this.stream.write(chunk, done);
  }

  /** Resolves when the file stream takes more again, or has failed. */
  drained(): Promise<void> {
    return drained(this.stream);
  }

  /** Writes a chunk; resolves when it is in the file. */
  write(chunk: Buffer): Promise<void> {
    return new Promise((resolve, reject) => {
      this.push(chunk, (err) => (err ? reject(err) : resolve()));
    });
  }

  /**
   * Checks the digest, then flushes the file to disk and renames it into the store: verify()
   * then install(), for callers with nothing to do in between.
   */
  async commit(expectedSize?: number): Promise<void> {
    await this.verify(expectedSize);
    await this.install();
  }

  /**
   * Checks that every byte given to write() hashes to the digest (and adds up to
   * `expectedSize`). A mismatch removes the temp file and throws
   * WHARF_UPSTREAM_DIGEST_MISMATCH: nothing unverified is kept. Once this resolves, the temp
   * file holds verified bytes that readers may finish, whatever install() meets.
   */
  async verify(expectedSize?: number): Promise<void> {
    // The hash saw every byte given to write(), whatever reached the disk: check it first, so
    // a disk error can never pass for a wrong upstream or the other way round.
    const actual = `${parseDigest(this.digest).algorithm}:${this.hash.digest('hex')}`;
    if (actual !== this.digest || (expectedSize !== undefined && expectedSize !== this.bytes)) {
      await this.abort();
      throw new WharfError(
        'WHARF_UPSTREAM_DIGEST_MISMATCH',
        `content for ${this.digest} hashes to ${actual} (${this.bytes} bytes)`,
        {
          hint: 'the upstream sent wrong bytes; nothing was stored',
          detail: { digest: this.digest },
        },
      );
    }
  }

  /**
   * Flushes the verified file to disk and renames it into the store. A filesystem failure (a
   * full disk at close, fsync, mkdir or rename) throws WHARF_STORE_FULL (ENOSPC, EDQUOT) or
   * WHARF_STATE_UNWRITABLE (anything else) and leaves the temp file in place: its bytes are
   * verified and may still be read, so the caller decides when abort() removes it.
   */
  async install(): Promise<void> {
    try {
      await this.close();
      await this.syncAndRename();
    } catch (err) {
      throw storeFailure(this.digest, this.store.root, err);
    }
  }

  private async syncAndRename(): Promise<void> {
    const fd = await open(this.tempPath, 'r');
    try {
      await fd.sync();
    } finally {
      await fd.close();
    }
    const final = this.store.path(this.digest);
    await mkdir(join(final, '..'), { recursive: true });
    try {
      await rename(this.tempPath, final);
    } catch (err) {
      // Windows refuses to replace a file that is open, as a blob being served is. The blob
      // already in place was verified when it was committed, and has the same content.
      if ((await this.store.size(this.digest)) !== this.bytes) throw err;
      await unlink(this.tempPath).catch(() => undefined);
    }
  }

  /**
   * Gives up on the file but hands over the running hash, which has seen every byte passed to
   * write(), so a fetch can go on verifying bytes it no longer stores.
   */
  takeHash(): Hash {
    return this.hash;
  }

  async abort(): Promise<void> {
    await this.close().catch(() => undefined);
    await unlink(this.tempPath).catch(() => undefined);
  }

  private close(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.closed = true;
    return new Promise((resolve, reject) => {
      this.stream.end((err?: Error | null) => (err ? reject(err) : resolve()));
    });
  }
}

function unwritableFolder(dir: string, err: unknown): WharfError {
  const errno = (err as NodeJS.ErrnoException).code;
  const why = errno ?? (err instanceof Error ? err.message : String(err));
  return new WharfError('WHARF_STATE_UNWRITABLE', `cannot write to ${dir}: ${why}`, {
    cause: err,
    hint: `make ${join(dir, '..')} and everything in it readable and writable by the user ` +
      'wharf runs as, or point the mirror at another data folder',
    detail: { dir, errno },
  });
}

/** A verified blob the filesystem would not take; `cause` keeps the errno error. */
function storeFailure(digest: string, root: string, err: unknown): WharfError {
  const errno = (err as NodeJS.ErrnoException).code;
  const full = errno === 'ENOSPC' || errno === 'EDQUOT';
  const why = err instanceof Error ? err.message : String(err);
  return new WharfError(
    full ? 'WHARF_STORE_FULL' : 'WHARF_STATE_UNWRITABLE',
    `verified blob ${digest} could not be stored under ${root}: ${why}`,
    {
      cause: err,
      hint: full
        ? 'free disk space there, or lower cache.maxSize so eviction keeps room'
        : 'check that the data folder is writable by the mirror and its disk is healthy',
      detail: { digest, errno },
    },
  );
}
