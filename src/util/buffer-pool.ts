/**
 * Read buffers handed back once the socket is done with them. Serving blobs reads a
 * mebibyte at a time for every client: a fresh buffer per read costs more in allocation
 * and garbage collection than the copy itself, and slows the herd the mirror exists for.
 */
export class BufferPool {
  private readonly free: Buffer[] = [];

  constructor(
    readonly size: number,
    /** Buffers kept for reuse at most; more are left to the garbage collector. */
    private readonly keep: number,
  ) {}

  take(): Buffer {
    return this.free.pop() ?? Buffer.allocUnsafeSlow(this.size);
  }

  /** Returns a buffer nothing refers to any more: a write callback has fired for it. */
  give(buf: Buffer): void {
    if (buf.length === this.size && this.free.length < this.keep) this.free.push(buf);
  }
}

/** The pool blob responses read into: 1 MiB buffers, 64 MiB kept at most. */
export const blobBuffers = new BufferPool(1024 * 1024, 64);
