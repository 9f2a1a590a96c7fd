import { EventEmitter, once } from 'node:events';
import { open, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { WharfError, toWharfError } from '../errors.js';
import type { BlobStore, BlobWriter } from '../store/blob-store.js';
import type { BlobResponse } from '../upstream/client.js';

const READ_CHUNK = 256 * 1024;

/**
 * One fetch of one blob from an upstream, shared by every client that wants it meanwhile.
 *
 * Bytes go to a temp file as they arrive, and each client reads that file at its own pace, so a
 * slow client holds no memory and never slows the fetch. The last byte is withheld from
 * clients until the digest is verified: a fetch that turns out wrong or cut off is never seen
 * as a complete blob; its clients' connections are broken instead.
 */
export class BlobFetch extends EventEmitter {
  /** Bytes the upstream announced; undefined when it sent no Content-Length. */
  readonly size: number | undefined;
  private written = 0;
  private state: 'running' | 'done' | 'failed' = 'running';
  private failure: WharfError | undefined;

  constructor(
    readonly digest: string,
    private readonly upstream: BlobResponse,
    private readonly writer: BlobWriter,
    private readonly store: BlobStore,
  ) {
    super();
    this.setMaxListeners(0);
    this.size = upstream.size;
  }

  get done(): boolean {
    return this.state === 'done';
  }

  get failed(): WharfError | undefined {
    return this.failure;
  }

  /** Bytes clients may read now: all of them once verified, else all but the last. */
  private get readable(): number {
    return this.state === 'done' ? this.written : Math.max(0, this.written - 1);
  }

  /**
   * Pulls the body from the upstream into the store. Resolves with the byte count once the
   * blob is verified and committed; rejects (and discards everything) otherwise.
   */
  async run(onBytes: (n: number) => void): Promise<number> {
    try {
      for await (const chunk of this.upstream.body) {
        const buf = chunk as Buffer;
        if (this.size !== undefined && this.written + buf.length > this.size) {
          throw new WharfError('WHARF_UPSTREAM_DIGEST_MISMATCH', `upstream sent more than ${this.size} bytes for ${this.digest}`);
        }
        await this.writer.write(buf);
        this.written += buf.length;
        onBytes(buf.length);
        this.emit('progress');
      }
      if (this.size !== undefined && this.written !== this.size) {
        throw new WharfError(
          'WHARF_UPSTREAM_CUT_OFF',
          `upstream sent ${this.written} of ${this.size} bytes for ${this.digest}`,
          { hint: 'the upstream connection broke; the next request fetches the blob again' },
        );
      }
      await this.writer.commit(this.size);
      this.state = 'done';
      this.emit('progress');
      return this.written;
    } catch (err) {
      this.upstream.body.destroy();
      await this.writer.abort();
      const failure = toWharfError(err);
      // A body that stops mid-way surfaces as a socket or timeout error from the HTTP client.
      this.failure =
        failure.code === 'WHARF_INTERNAL'
          ? new WharfError('WHARF_UPSTREAM_CUT_OFF', `fetch of ${this.digest} broke off: ${failure.message}`, { cause: err })
          : failure;
      this.state = 'failed';
      this.emit('progress');
      throw this.failure;
    }
  }

  /**
   * Streams `[start, end)` of the blob to a client as it arrives. Throws when the fetch fails;
   * the caller then breaks the client's connection.
   */
  async pipeTo(out: Writable, start = 0, end?: number): Promise<number> {
    // Each client reads through its own handle: positional reads need no coordination, and a
    // handle opened on the temp file stays valid when the file is renamed into the store.
    const fd = await this.openForRead();
    try {
      let pos = start;
      let sent = 0;
      for (;;) {
        const stop = end ?? (this.state === 'done' ? this.written : this.size ?? Infinity);
        if (pos >= stop) return sent;
        if (this.failure) throw this.failure;
        if (out.destroyed) return sent;
        const available = Math.min(this.readable, stop);
        if (pos < available) {
          const length = Math.min(READ_CHUNK, available - pos);
          const buf = Buffer.allocUnsafe(length);
          const { bytesRead } = await fd.read(buf, 0, length, pos);
          pos += bytesRead;
          sent += bytesRead;
          if (!out.write(bytesRead === length ? buf : buf.subarray(0, bytesRead))) {
            await drained(out);
          }
          continue;
        }
        if (this.state !== 'running' && this.failure === undefined && pos >= this.written) return sent;
        await once(this, 'progress');
      }
    } finally {
      await fd.close().catch(() => undefined);
    }
  }

  private async openForRead(): Promise<FileHandle> {
    try {
      return await open(this.writer.tempPath, 'r');
    } catch (err) {
      if (this.state === 'done') return open(this.path, 'r');
      if (this.failure) throw this.failure;
      throw err;
    }
  }

  /** Where the committed blob is, for clients that arrive after the fetch. */
  get path(): string {
    return this.store.path(this.digest);
  }
}

/** Resolves when a writable can take more, or is gone; leaves no listener behind. */
function drained(out: Writable): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      out.off('drain', done);
      out.off('close', done);
      resolve();
    };
    out.on('drain', done);
    out.on('close', done);
  });
}
