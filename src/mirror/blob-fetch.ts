import { EventEmitter, once } from 'node:events';
import { open, type FileHandle } from 'node:fs/promises';
import type { Hash } from 'node:crypto';
import type { Writable } from 'node:stream';
import { WharfError, toWharfError } from '../errors.js';
import { hasher, parseDigest } from '../oci/digest.js';
import type { BlobWriter } from '../store/blob-store.js';
import type { BlobResponse } from '../upstream/client.js';
import { blobBuffers } from '../util/buffer-pool.js';
import { drained } from '../util/drained.js';

/** Bytes a pass-through fetch keeps in memory ahead of its slowest client. */
export const PASS_THROUGH_WINDOW = 16 * 1024 * 1024;

/**
 * Bytes a client of a running fetch waits for before it reads. The upstream's chunks are tens
 * of KiB: reading each one for each client of a herd costs a file read, a socket write and a
 * wake-up per chunk and client, CPU that the fetch itself then lacks. Well under the
 * pass-through window, so a waiting reader never holds the upstream back.
 */
export const MIN_READ = 512 * 1024;

/**
 * Longest a client waits for MIN_READ to build up before it is sent what there is: a slow
 * upstream still streams, and a client's first bytes go out at once (an engine that got none
 * before a cut-off does not report the retry it then makes).
 */
const MAX_HOLD_MS = 50;

/** Most bytes a client is given from memory in one step before the loop looks again. */
const MAX_STEP = 1024 * 1024;

interface Reader {
  pos: number;
  /** When it was last sent bytes (performance.now()). */
  sentAt: number;
}

export interface FetchEvents {
  /**
   * The store could not take the blob (full disk, mid-write or at its commit); it streams on,
   * or is served from its verified temp file, without being kept.
   */
  onPassThrough?: (err: unknown) => void;
  /** Resolves when the blob's file may be renamed into the store (no unlink of it under way). */
  beforeInstall?: () => Promise<void>;
}

/**
 * One fetch of one blob from an upstream, shared by every client that wants it meanwhile.
 *
 * Bytes go to a temp file as they arrive, and each client reads that file at its own pace, so a
 * slow client holds no memory and never slows the fetch. When the disk cannot take them (no
 * writer from the start, or a write fails, ENOSPC above all), the fetch turns pass-through:
 * further bytes stay in a bounded memory window that the slowest client paces, and nothing is
 * stored. A disk that fails only at the commit, once the digest matched, ends the fetch done
 * but unstored: every byte is verified and in the temp file, which its readers finish.
 * Either way the last byte is withheld until the digest is verified: a wrong or cut-off fetch
 * is never seen as a complete blob; its clients' connections are broken instead.
 */
export class BlobFetch extends EventEmitter {
  /** Bytes the upstream announced; undefined when it sent no Content-Length. */
  readonly size: number | undefined;
  private written = 0;
  /**
   * Bytes confirmed in the temp file; bytes past it are in `memory`: queued for the file while
   * the store takes the blob, the pass-through window once it does not.
   */
  private fileBytes = 0;
  private memory: Buffer[] = [];
  private memoryStart = 0;
  private hash: Hash | undefined;
  private state: 'running' | 'done' | 'failed' = 'running';
  private failure: WharfError | undefined;
  private readonly readers = new Set<Reader>();
  private everRead = false;
  private readonly tempPath: string | undefined;
  /** Removes the temp file of a fetch that turned pass-through, once no reader needs it. */
  private discardTemp: (() => Promise<void>) | undefined;
  /** Once set, bytes that were only in the temp file are gone: no new client can start. */
  private tempDiscarded = false;

  constructor(
    readonly digest: string,
    private readonly upstream: BlobResponse,
    private writer: BlobWriter | undefined,
    /** Where the blob lands in the store once committed. */
    private readonly finalPath: string,
    private readonly events: FetchEvents = {},
  ) {
    super();
    this.setMaxListeners(0);
    this.size = upstream.size;
    this.tempPath = writer?.tempPath;
    if (!writer) this.hash = hasher(parseDigest(digest));
  }

  get done(): boolean {
    return this.state === 'done';
  }

  /** True when the blob is streamed without being stored. */
  get passThrough(): boolean {
    return this.writer === undefined;
  }

  /** Resolves once the blob is verified; rejects with the reason the fetch failed. */
  async verified(): Promise<void> {
    while (this.state === 'running') await once(this, 'progress');
    if (this.failure) throw this.failure;
  }

  /** Whether a client wanting bytes from `pos` on can still be served by this fetch. */
  canServeFrom(pos: number): boolean {
    if (this.state === 'failed') return false;
    if (this.writer) return true;
    if (pos < this.fileBytes) return this.memoryStart === this.fileBytes && !this.tempDiscarded;
    return pos >= this.memoryStart;
  }

  /** Bytes clients may read now: all of them once verified, else all but the last. */
  private get readable(): number {
    return this.state === 'done' ? this.written : Math.max(0, this.written - 1);
  }

  /**
   * Pulls the body from the upstream. Resolves with the byte count and whether the blob was
   * stored, once the digest is verified; rejects (and discards everything) otherwise.
   */
  async run(onBytes: (n: number) => void): Promise<{ bytes: number; stored: boolean }> {
    try {
      for await (const chunk of this.upstream.body) {
        const buf = chunk as Buffer;
        if (this.size !== undefined && this.written + buf.length > this.size) {
          throw new WharfError('WHARF_UPSTREAM_DIGEST_MISMATCH', `upstream sent more than ${this.size} bytes for ${this.digest}`);
        }
        await this.accept(buf);
        onBytes(buf.length);
        this.emit('progress');
        if (this.writer === undefined) await this.paceToReaders();
      }
      if (this.size !== undefined && this.written !== this.size) {
        throw new WharfError(
          'WHARF_UPSTREAM_CUT_OFF',
          `upstream sent ${this.written} of ${this.size} bytes for ${this.digest}`,
          { hint: 'the upstream connection broke; the next request fetches the blob again' },
        );
      }
      if (this.writer) await this.writer.verify(this.size);
      else this.verifyPassThrough();
      // Verified: the clients get their last byte now rather than after the fsync and rename.
      // A herd's next blob request waits on that last byte, and flushing a large blob to disk
      // takes long enough to leave the link to the origin idle meanwhile.
      this.state = 'done';
      this.emit('progress');
      const stored = this.writer ? await this.install(this.writer) : false;
      return { bytes: this.written, stored };
    } catch (err) {
      this.upstream.body.destroy();
      await this.writer?.abort();
      const failure = toWharfError(err);
      // A body that stops mid-way surfaces as a socket or timeout error from the HTTP client.
      this.failure =
        failure.code === 'WHARF_INTERNAL'
          ? new WharfError('WHARF_UPSTREAM_CUT_OFF', `fetch of ${this.digest} broke off: ${failure.message}`, { cause: err })
          : failure;
      this.state = 'failed';
      this.emit('progress');
      throw this.failure;
    } finally {
      await this.releaseTemp();
    }
  }

  /** Bytes of a pass-through fetch are never kept; its temp file only served its readers. */
  private async releaseTemp(): Promise<void> {
    if (this.state === 'running' || this.readers.size > 0 || !this.discardTemp) return;
    const discard = this.discardTemp;
    this.discardTemp = undefined;
    this.tempDiscarded = true;
    await discard();
  }

  /**
   * Flushes the verified blob and renames it into the store. A filesystem error now must not
   * cost the clients anything: every byte is verified and in the temp file, so the fetch stays
   * done but unstored, and the temp file goes once its readers finish (as for a pass-through
   * fetch).
   */
  private async install(writer: BlobWriter): Promise<boolean> {
    try {
      await this.events.beforeInstall?.();
      await writer.install();
      return this.writer === writer;
    } catch (err) {
      this.dropWriter(writer, err);
      return false;
    }
  }

  private async accept(buf: Buffer): Promise<void> {
    this.memory.push(buf);
    this.written += buf.length;
    const writer = this.writer;
    if (!writer) {
      this.hash!.update(buf);
      return;
    }
    const more = writer.push(buf, (err) => this.onWritten(writer, buf, err));
    if (!more) await writer.drained();
  }

  /** A queued chunk reached the file (they do in order), or the file failed. */
  private onWritten(writer: BlobWriter, buf: Buffer, err: Error | null | undefined): void {
    if (this.writer !== writer) return;
    if (err) return this.dropWriter(writer, err);
    this.memory.shift();
    this.fileBytes += buf.length;
    this.memoryStart = this.fileBytes;
  }

  /**
   * The disk is full (or failing), mid-write or at the commit: the clients must not pay for
   * it. What is in the temp file stays there for the readers, the bytes queued for it stay in
   * memory, the rest is verified as it streams, and nothing is stored.
   */
  private dropWriter(writer: BlobWriter, err: unknown): void {
    if (this.writer !== writer) return;
    this.writer = undefined;
    this.hash = writer.takeHash();
    this.memoryStart = this.fileBytes;
    this.discardTemp = () => writer.abort();
    this.events.onPassThrough?.(err);
  }

  private verifyPassThrough(): void {
    const actual = `${parseDigest(this.digest).algorithm}:${this.hash!.digest('hex')}`;
    if (actual !== this.digest) {
      throw new WharfError(
        'WHARF_UPSTREAM_DIGEST_MISMATCH',
        `content for ${this.digest} hashes to ${actual} (${this.written} bytes)`,
        { hint: 'the upstream sent wrong bytes; nothing was served complete' },
      );
    }
  }

  /** Holds the upstream back while the memory window is full; the slowest reader sets the pace. */
  private async paceToReaders(): Promise<void> {
    for (;;) {
      const slowest = this.slowestReader();
      if (this.written - slowest <= PASS_THROUGH_WINDOW) return;
      if (this.readers.size === 0 && this.everRead) {
        throw new WharfError('WHARF_UPSTREAM_CUT_OFF', `every client of the unstored fetch of ${this.digest} left`);
      }
      await once(this, 'consumed');
    }
  }

  private slowestReader(): number {
    let min = this.readers.size ? Infinity : this.memoryStart;
    for (const r of this.readers) min = Math.min(min, r.pos);
    return min;
  }

  /** Drops memory every reader has passed. */
  private trim(): void {
    const slowest = this.slowestReader();
    while (this.memory.length && this.memoryStart + this.memory[0]!.length <= slowest) {
      this.memoryStart += this.memory.shift()!.length;
    }
    this.emit('consumed');
  }

  /**
   * Streams `[start, end)` of the blob to a client as it arrives. Throws when the fetch fails;
   * the caller then breaks the client's connection.
   */
  async pipeTo(out: Writable, start = 0, end?: number): Promise<number> {
    const reader: Reader = { pos: start, sentAt: -Infinity };
    this.readers.add(reader);
    this.everRead = true;
    let fd: FileHandle | undefined;
    try {
      let sent = 0;
      for (;;) {
        const stop = end ?? (this.state === 'done' ? this.written : this.size ?? Infinity);
        // Up to the blob's end, the last byte waits for the digest check; a blob announced
        // empty has none to hold back, so its end itself waits.
        const toBlobEnd = end === undefined || end === this.size;
        if (reader.pos >= stop && (this.state === 'done' || !toBlobEnd)) return sent;
        if (this.failure) throw this.failure;
        if (out.destroyed) return sent;
        // The last byte asked for waits for the digest check, for a range as for the whole
        // blob: once a client has every byte it asked for, a broken connection is too late.
        const available = Math.min(this.readable, this.state === 'done' ? stop : stop - 1);
        const batched = this.state === 'done' || available - reader.pos >= MIN_READ
          || performance.now() - reader.sentAt >= MAX_HOLD_MS;
        if (reader.pos < available && batched) {
          let slices: Buffer[];
          let pooled: Buffer | undefined;
          if (reader.pos < this.fileBytes) {
            // Each client reads through its own handle: positional reads need no coordination,
            // and a handle opened on the temp file stays valid when it is renamed into place.
            fd ??= await this.openForRead();
            pooled = blobBuffers.take();
            const length = Math.min(pooled.length, available - reader.pos, this.fileBytes - reader.pos);
            const { bytesRead } = await fd.read(pooled, 0, length, reader.pos);
            slices = [pooled.subarray(0, bytesRead)];
          } else {
            // Straight from the chunks as they came, without a copy: a reader near the head
            // of the fetch touches neither the file nor a buffer of its own.
            slices = this.fromMemory(reader.pos, Math.min(available, reader.pos + MAX_STEP));
          }
          const release = pooled && (() => blobBuffers.give(pooled));
          let more = true;
          for (const [i, slice] of slices.entries()) {
            reader.pos += slice.length;
            sent += slice.length;
            more = out.write(slice, i === slices.length - 1 ? release : undefined);
          }
          reader.sentAt = performance.now();
          if (this.writer === undefined) this.trim();
          if (!more) await drained(out);
          continue;
        }
        if (this.state === 'done' && reader.pos >= this.written) return sent;
        await once(this, 'progress');
      }
    } finally {
      this.readers.delete(reader);
      if (this.writer === undefined) this.trim();
      await fd?.close().catch(() => undefined);
      await this.releaseTemp();
    }
  }

  /** The bytes `[pos, limit)` as slices of the chunks in memory. */
  private fromMemory(pos: number, limit: number): Buffer[] {
    const slices: Buffer[] = [];
    let offset = this.memoryStart;
    for (const chunk of this.memory) {
      const end = offset + chunk.length;
      if (pos < end && offset < limit) {
        slices.push(chunk.subarray(Math.max(pos, offset) - offset, Math.min(end, limit) - offset));
      }
      if (end >= limit) break;
      offset = end;
    }
    if (slices.length === 0) {
      throw new WharfError('WHARF_INTERNAL', `bytes at ${pos} of ${this.digest} are gone from memory`);
    }
    return slices;
  }

  private async openForRead(): Promise<FileHandle> {
    try {
      return await open(this.tempPath!, 'r');
    } catch (err) {
      // Committed meanwhile: the temp file was renamed into the store.
      if (this.state === 'done' && this.writer) return open(this.finalPath, 'r');
      throw err;
    }
  }
}
