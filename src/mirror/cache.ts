import { statfs } from 'node:fs/promises';
import type { Logger } from '../log.js';
import type { BlobStore } from '../store/blob-store.js';
import { evict, type EvictResult } from '../store/eviction.js';
import type { IndexDb } from '../store/index-db.js';
import type { CacheConfig } from './config.js';
import type { MirrorMetrics } from './metrics.js';

/** Free bytes for unprivileged writers on the filesystem holding `path`. */
export async function freeDisk(path: string): Promise<number> {
  const s = await statfs(path);
  return s.bavail * s.bsize;
}

/**
 * Keeps the store within its budget and the filesystem above its floor: tracks the store's
 * size, evicts in the background when it grows past the budget, and decides whether a new
 * fetch may be stored at all or must pass through.
 */
export class CacheManager {
  private bytes = 0;
  private running: Promise<EvictResult> | undefined;
  private timer: NodeJS.Timeout | undefined;
  private readonly busy = new Map<string, number>();
  /** Files an eviction is unlinking now, by digest. */
  private readonly unlinks = new Map<string, Promise<void>>();

  constructor(
    private readonly config: CacheConfig,
    private readonly store: BlobStore,
    private readonly index: IndexDb,
    private readonly logger: Logger,
    private readonly metrics: MirrorMetrics,
  ) {}

  start(): void {
    this.index.onTouchFlushError = (err, pending) => {
      this.logger.warn({ err: err.message, blobs: pending }, 'cannot record blob uses, will retry');
    };
    this.bytes = this.index.totalSize();
    this.refreshMetrics();
    this.timer = setInterval(() => void this.checkDisk(), this.config.diskCheckIntervalMs);
    this.timer.unref();
    void this.checkDisk();
  }

  stop(): void {
    clearInterval(this.timer);
  }

  /** Waits until no eviction runs, so the index can close under no one. */
  async idle(): Promise<void> {
    while (this.running) await this.running.catch(() => undefined);
  }

  get size(): number {
    return this.bytes;
  }

  grow(bytes: number): void {
    this.bytes += bytes;
    this.metrics.storeBytes.set(this.bytes);
    if (bytes > 0 && this.overBudget()) void this.gc();
  }

  /** Records an unlink under way; the returned function ends it. */
  private unlinking(digest: string): () => void {
    let end!: () => void;
    const gone = new Promise<void>((resolve) => (end = resolve));
    this.unlinks.set(digest, gone);
    return () => {
      if (this.unlinks.get(digest) === gone) this.unlinks.delete(digest);
      end();
    };
  }

  /**
   * Resolves once no eviction is unlinking `digest`'s file: a fetch of it waits for this
   * before it renames its own file into place.
   */
  async unlinked(digest: string): Promise<void> {
    await this.unlinks.get(digest);
  }

  /** Marks a stored blob as being served; eviction leaves it alone until released. */
  hold(digest: string): () => void {
    this.busy.set(digest, (this.busy.get(digest) ?? 0) + 1);
    let released = false;
    return () => {
      if (released) return;
      released = true;
      const n = (this.busy.get(digest) ?? 1) - 1;
      if (n <= 0) this.busy.delete(digest);
      else this.busy.set(digest, n);
    };
  }

  /**
   * Whether a new blob of `size` bytes may be stored. Below the free-disk floor it first evicts
   * what it can; if the floor still cannot be kept, the blob passes through unstored.
   */
  async canStore(size: number): Promise<boolean> {
    const floor = this.config.minFreeDiskBytes;
    let free = await freeDisk(this.store.root).catch(() => Infinity);
    if (free - size >= floor) return true;
    await this.gc(floor + size - free);
    free = await freeDisk(this.store.root).catch(() => Infinity);
    return free - size >= floor;
  }

  passThrough(log: Record<string, unknown>, err: unknown): void {
    this.metrics.passThroughFetches.inc();
    const reason = err === undefined ? 'below the free-disk floor' : errnoOf(err);
    this.logger.warn({ ...log, reason }, 'store full, streaming without storing');
    void this.gc(0);
  }

  /**
   * Evicts least recently used blobs: down to the low-water mark when over the budget, and at
   * least `extra` bytes more (to make room on the disk). One eviction runs at a time; a call
   * while one runs waits for it.
   */
  gc(extra = 0): Promise<EvictResult> {
    if (this.running) return this.running;
    this.resync();
    const { maxSizeBytes, lowWater } = this.config;
    const overBudget = maxSizeBytes === undefined ? 0 : this.bytes - maxSizeBytes * lowWater;
    const bytes = Math.max(0, extra, overBudget > 0 && this.overBudget() ? overBudget : 0);
    if (bytes === 0) return Promise.resolve({ count: 0, bytes: 0 });
    const started = Date.now();
    this.running = evict(this.index, this.store, {
      bytes,
      isBusy: (d) => this.busy.has(d),
      onUnlink: (d) => this.unlinking(d),
      onEvicted: (row) => {
        this.bytes -= row.size;
        this.metrics.evictions.inc();
        this.metrics.evictedBytes.inc(row.size);
      },
    })
      .then((result) => {
        this.refreshMetrics();
        if (result.count) {
          this.logger.info({ blobs: result.count, bytes: result.bytes, ms: Date.now() - started }, 'evicted');
        }
        if (result.bytes < bytes) {
          this.logger.warn({ bytes: bytes - result.bytes }, 'eviction could not free enough: the rest is pinned or in use');
        }
        return result;
      })
      // SQLITE_BUSY or SQLITE_FULL must not end the mirror: callers start passes with `void`.
      .catch((err: Error) => {
        this.logger.warn({ err: err.message }, 'eviction failed');
        return { count: 0, bytes: 0 };
      })
      .finally(() => {
        this.running = undefined;
      });
    // Blobs stored while this pass ran may have pushed the store over again; another pass
    // follows as long as passes free something (pinned or busy blobs may make it impossible).
    void this.running.then((result) => {
      if (result.count > 0 && this.overBudget()) setImmediate(() => void this.gc());
    }, () => undefined);
    return this.running;
  }

  private overBudget(): boolean {
    return this.config.maxSizeBytes !== undefined && this.bytes > this.config.maxSizeBytes;
  }

  private async checkDisk(): Promise<void> {
    try {
      this.resync();
      const free = await freeDisk(this.store.root);
      if (free < this.config.minFreeDiskBytes) await this.gc(this.config.minFreeDiskBytes - free);
      else if (this.overBudget()) await this.gc();
    } catch (err) {
      this.logger.warn({ err: (err as Error).message }, 'disk check failed');
    }
  }

  /**
   * Takes the size from the index again. `wharf cache gc` and `verify` delete rows from
   * another process, which this count never hears of: kept only by grow(), it would stay too
   * high for ever and evict more than the budget asks.
   */
  private resync(): void {
    if (!this.index.db.open) return;
    this.bytes = this.index.totalSize();
    this.metrics.storeBytes.set(this.bytes);
  }

  refreshMetrics(): void {
    this.metrics.storeBytes.set(this.bytes);
    this.metrics.pinnedBytes.set(this.index.pinnedBytes());
  }
}

/** ENOSPC rather than WHARF_STORE_FULL: a store failure wraps the errno error it met. */
function errnoOf(err: unknown): string {
  const cause = err instanceof Error ? err.cause : undefined;
  const errno = (cause as NodeJS.ErrnoException | undefined)?.code;
  return errno ?? (err as NodeJS.ErrnoException).code ?? String(err);
}
