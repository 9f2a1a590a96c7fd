import { mkdir, readFile, type FileHandle } from 'node:fs/promises';
import { WharfError, isWharfError } from '../errors.js';
import type { Logger } from '../log.js';
import { children } from '../oci/manifest.js';
import type { ManifestRef } from '../oci/reference.js';
import { BlobStore, type BlobWriter } from '../store/blob-store.js';
import type { IndexDb } from '../store/index-db.js';
import { openIndex, recover } from '../store/recovery.js';
import { CacheManager } from './cache.js';
import {
  RegistryClient, isUnavailable, type FetchedManifest, type TagPage, type TagQuery,
} from '../upstream/client.js';
import { BlobFetch } from './blob-fetch.js';
import type { MirrorConfig, UpstreamConfig } from './config.js';
import type { MirrorMetrics, Outcome } from './metrics.js';
import { openFile, type OpenFile } from './send-file.js';
import { UpstreamHealth } from './upstream-health.js';

export interface ManifestResult {
  digest: string;
  mediaType: string;
  body: Buffer;
  outcome: Outcome;
}

export type BlobSource =
  | {
      kind: 'store';
      digest: string;
      size: number;
      /** Open before any header is sent, so an unlink after it takes nothing from the client. */
      file: FileHandle;
      outcome: Outcome;
      /** Ends the hold that keeps eviction off the blob while it is served; closes the file. */
      release: () => void;
    }
  | { kind: 'fetch'; digest: string; size: number | undefined; fetch: BlobFetch; outcome: Outcome };

interface InFlight {
  upstream: string;
  repo: string;
  started: Promise<{ fetch: BlobFetch; finished: Promise<boolean> }>;
}

/**
 * The mirror's logic, independent of HTTP: manifests by tag and digest with tag revalidation
 * and stale serving, and blobs from the store or from one shared upstream fetch.
 */
export class Mirror {
  readonly store: BlobStore;
  readonly index: IndexDb;
  private readonly clients = new Map<string, RegistryClient>();
  private readonly fetches = new Map<string, InFlight>();
  private readonly manifestFlights = new Map<string, Promise<ManifestResult>>();
  /** Tags whose upstream failed to revalidate them, and when: asked again after tagTtl. */
  private readonly staleSince = new Map<string, number>();
  private readonly health: UpstreamHealth;
  readonly cache: CacheManager;

  private constructor(
    readonly config: MirrorConfig,
    index: IndexDb,
    private readonly logger: Logger,
    private readonly metrics: MirrorMetrics,
  ) {
    this.store = new BlobStore(config.data);
    this.index = index;
    this.cache = new CacheManager(config.cache, this.store, index, logger, metrics);
    this.health = new UpstreamHealth(logger, metrics);
    for (const u of config.upstreams) {
      this.clients.set(
        u.name,
        new RegistryClient(u, {
          logger: logger.child({ upstream: u.name }),
          timeoutMs: config.upstreamTimeoutMs,
          bodyTimeoutMs: config.upstreamBodyTimeoutMs,
        }),
      );
    }
  }

  static async open(config: MirrorConfig, logger: Logger, metrics: MirrorMetrics): Promise<Mirror> {
    await mkdir(config.data, { recursive: true });
    const index = await openIndex(config.data, logger);
    const mirror = new Mirror(config, index, logger, metrics);
    await mirror.store.init();
    await recover(mirror.store, index, logger);
    mirror.cache.start();
    return mirror;
  }

  async close(): Promise<void> {
    this.cache.stop();
    await this.cache.idle();
    this.index.close();
  }

  get inFlight(): number {
    return this.fetches.size;
  }

  /**
   * Resolves once every fetch now in flight has been stored or discarded. Clients get a
   * blob's last byte as soon as it is verified, a moment before it is in the store.
   */
  async settled(): Promise<void> {
    const flights = [...this.fetches.values()];
    await Promise.all(flights.map((f) => f.started.then((s) => s.finished, () => false)));
  }

  private client(upstream: UpstreamConfig): RegistryClient {
    return this.clients.get(upstream.name)!;
  }

  // ---- manifests -------------------------------------------------------------------------

  async manifest(upstream: UpstreamConfig, repo: string, ref: ManifestRef): Promise<ManifestResult> {
    const key = `${upstream.name}/${repo}:${ref.kind === 'tag' ? ref.tag : ref.digest}`;
    let flight = this.manifestFlights.get(key);
    if (flight) {
      const result = await flight;
      return { ...result, outcome: result.outcome === 'miss' ? 'coalesced' : result.outcome };
    }
    flight =
      ref.kind === 'digest'
        ? this.manifestByDigest(upstream, repo, ref.digest)
        : this.manifestByTag(upstream, repo, ref.tag);
    this.manifestFlights.set(key, flight);
    try {
      return await flight;
    } finally {
      this.manifestFlights.delete(key);
    }
  }

  private async manifestByDigest(upstream: UpstreamConfig, repo: string, digest: string) {
    const cached = await this.cachedManifest(digest);
    if (cached && this.index.isVerifiedFor(digest, upstream.name, repo)) {
      this.index.touch(digest);
      return { ...cached, outcome: 'hit' as const };
    }
    const fetched = await this.upstreamCall(upstream, () => this.client(upstream).getManifest(repo, digest));
    if (!fetched) throw manifestUnknown(repo, digest);
    await this.keepManifest(upstream, repo, fetched);
    return { digest, mediaType: fetched.mediaType, body: fetched.body, outcome: 'miss' as const };
  }

  private async manifestByTag(upstream: UpstreamConfig, repo: string, tag: string) {
    const row = this.index.getTag(upstream.name, repo, tag);
    const cached = row ? await this.cachedManifest(row.digest) : undefined;
    if (row && cached && Date.now() - row.confirmed_at < this.config.tagTtlMs) {
      this.index.touch(row.digest);
      return { ...cached, outcome: 'hit' as const };
    }
    const key = `${upstream.name}/${repo}:${tag}`;
    const askedAt = this.staleSince.get(key);
    if (cached && askedAt !== undefined && Date.now() - askedAt < this.config.tagTtlMs) {
      // The upstream failed to answer for this tag within the TTL: asking again on every
      // request would make each runner wait out the upstream's timeout for the same answer.
      return this.serveStale(upstream, repo, tag, cached, 'upstream failed within tagTtl');
    }

    try {
      const client = this.client(upstream);
      // One HEAD is the cheap check: same digest means the cached manifest is still current.
      const head = cached
        ? await this.upstreamCall(upstream, () => client.headManifest(repo, tag)).catch((err) => {
            if (isWharfError(err, 'WHARF_UPSTREAM_PROTOCOL')) return undefined;
            throw err;
          })
        : undefined;
      if (head === null) {
        this.index.deleteTag(upstream.name, repo, tag);
        throw manifestUnknown(repo, tag);
      }
      this.staleSince.delete(key);
      if (head && cached && head.digest === cached.digest) {
        this.index.putTag(upstream.name, repo, tag, cached.digest);
        this.index.touch(cached.digest);
        return { ...cached, outcome: 'revalidated' as const };
      }
      const fetched = await this.upstreamCall(upstream, () => client.getManifest(repo, tag));
      if (!fetched) {
        this.index.deleteTag(upstream.name, repo, tag);
        throw manifestUnknown(repo, tag);
      }
      if (await this.keepManifest(upstream, repo, fetched)) {
        this.index.putTag(upstream.name, repo, tag, fetched.digest);
      }
      if (row && row.digest !== fetched.digest) {
        this.logger.info({ upstream: upstream.name, repo, tag, digest: fetched.digest }, 'tag moved');
      }
      return { digest: fetched.digest, mediaType: fetched.mediaType, body: fetched.body, outcome: 'miss' as const };
    } catch (err) {
      // An upstream that cannot be asked (down, timing out, 5xx, 429) does not stop the
      // runners: the last digest it confirmed is served, and said so.
      if (cached && isUnavailable(err)) {
        this.staleSince.set(key, Date.now());
        return this.serveStale(upstream, repo, tag, cached, (err as Error).message);
      }
      throw err;
    }
  }

  private serveStale(
    upstream: UpstreamConfig,
    repo: string,
    tag: string,
    cached: { digest: string; mediaType: string; body: Buffer },
    why: string,
  ) {
    this.metrics.staleServed.inc({ upstream: upstream.name });
    this.logger.warn({ upstream: upstream.name, repo, tag, digest: cached.digest, err: why },
      'serving stale tag');
    this.index.touch(cached.digest);
    return { ...cached, outcome: 'stale' as const };
  }

  private async cachedManifest(digest: string) {
    const row = this.index.getBlob(digest);
    if (!row?.media_type) return undefined;
    try {
      const body = await readFile(this.store.path(digest));
      return { digest, mediaType: row.media_type, body };
    } catch {
      // The index outlived the file (deleted by hand, or a crash): forget it.
      this.forget(digest, row.size);
      return undefined;
    }
  }

  /**
   * Stores a verified manifest and its references. False when the store could not take it
   * (a full disk): the client still gets the manifest, the next request fetches it again.
   */
  private async keepManifest(upstream: UpstreamConfig, repo: string, m: FetchedManifest) {
    if (!this.index.getBlob(m.digest)) {
      let writer: BlobWriter | undefined;
      try {
        writer = await this.store.writer(m.digest);
        await writer.write(m.body);
        await this.cache.unlinked(m.digest);
        await writer.commit(m.body.length);
      } catch (err) {
        await writer?.abort().catch(() => undefined);
        this.cache.passThrough({ upstream: upstream.name, repo, digest: m.digest }, err);
        return false;
      }
      this.grow(m.body.length);
    }
    const refs = children(m.parsed).map((d) => d.digest);
    this.index.putManifest(m.digest, m.body.length, m.mediaType, upstream.name, repo, refs);
    return true;
  }

  // ---- blobs -----------------------------------------------------------------------------

  /**
   * Makes sure a blob is in the store, fetching it if needed, without a client to stream it
   * to. Resolves true once stored (false when it could only pass through).
   */
  async ensureBlob(upstream: UpstreamConfig, repo: string, digest: string): Promise<boolean> {
    const stored = await this.storedFor(upstream, repo, digest);
    if (stored) {
      stored.release();
      this.index.touch(digest);
      return true;
    }
    const flight = this.fetches.get(digest);
    if (flight && flight.upstream === upstream.name && flight.repo === repo) {
      return (await flight.started).finished;
    }
    const source = await this.blob(upstream, repo, digest);
    if (source.kind === 'store') {
      source.release();
      return true;
    }
    const own = this.fetches.get(digest);
    return own ? (await own.started).finished : this.index.getBlob(digest) !== undefined;
  }

  /** Answers a blob HEAD without fetching the blob. */
  async blobHead(upstream: UpstreamConfig, repo: string, digest: string) {
    const stored = await this.storedFor(upstream, repo, digest);
    if (stored) {
      stored.release();
      return { size: stored.size, outcome: 'hit' as const };
    }
    const flight = this.fetches.get(digest);
    if (flight && flight.upstream === upstream.name && flight.repo === repo) {
      const { fetch } = await flight.started;
      if (fetch.size !== undefined) return { size: fetch.size, outcome: 'coalesced' as const };
    }
    const head = await this.upstreamCall(upstream, () => this.client(upstream).headBlob(repo, digest));
    if (!head) throw blobUnknown(repo, digest);
    return { size: head.size, outcome: 'miss' as const };
  }

  async blob(upstream: UpstreamConfig, repo: string, digest: string): Promise<BlobSource> {
    const stored = await this.storedFor(upstream, repo, digest);
    if (stored) {
      this.index.touch(digest);
      const { size, file, release } = stored;
      return { kind: 'store', digest, size, file, outcome: 'hit', release };
    }

    const flight = this.fetches.get(digest);
    if (flight) {
      // Another client's fetch is for this content; share it only once the upstream confirms
      // that this repository has the blob too.
      if (flight.upstream !== upstream.name || flight.repo !== repo) {
        const head = await this.upstreamCall(upstream, () => this.client(upstream).headBlob(repo, digest));
        if (!head) throw blobUnknown(repo, digest);
        this.index.addRepo(digest, upstream.name, repo);
      }
      const { fetch } = await flight.started;
      // A pass-through fetch keeps only a window of the blob; a client that needs bytes it has
      // already dropped gets a fetch of its own.
      if (fetch.canServeFrom(0)) {
        return { kind: 'fetch', digest, size: fetch.size, fetch, outcome: 'coalesced' };
      }
      const own = await this.startFetch(upstream, repo, digest);
      return { kind: 'fetch', digest, size: own.fetch.size, fetch: own.fetch, outcome: 'miss' };
    }

    const started = this.startFetch(upstream, repo, digest);
    const entry: InFlight = { upstream: upstream.name, repo, started };
    this.fetches.set(digest, entry);
    // Only the shared fetch leaves the map: a client's own fetch (past a pass-through window)
    // must not take the entry that others still join.
    const leave = () => {
      if (this.fetches.get(digest) === entry) this.fetches.delete(digest);
    };
    started.then(({ finished }) => finished.finally(leave), leave);
    const { fetch } = await started;
    return { kind: 'fetch', digest, size: fetch.size, fetch, outcome: 'miss' };
  }

  /**
   * The stored blob if it may be served under this repository: verified there before, or
   * confirmed now with one HEAD upstream. A blob is never served under a repository the
   * upstream does not say it belongs to.
   */
  private async storedFor(upstream: UpstreamConfig, repo: string, digest: string) {
    const row = this.index.getBlob(digest);
    if (!row) return undefined;
    // Held from here, so eviction cannot take the file between this check and the response;
    // `wharf cache gc` cannot see the hold, but the file is open before any header is sent.
    const hold = this.cache.hold(digest);
    let opened: OpenFile | undefined;
    let released = false;
    const release = () => {
      if (released) return;
      released = true;
      hold();
      void opened?.handle.close().catch(() => undefined);
    };
    try {
      opened = await openFile(this.store.path(digest));
      if (opened === undefined) {
        this.forget(digest, row.size);
        release();
        return undefined;
      }
      const { handle: file, size } = opened;
      if (!this.index.isVerifiedFor(digest, upstream.name, repo)) {
        const head = await this.upstreamCall(upstream, () => this.client(upstream).headBlob(repo, digest));
        if (!head) throw blobUnknown(repo, digest);
        this.index.addRepo(digest, upstream.name, repo);
      }
      return { size, file, release };
    } catch (err) {
      release();
      throw err;
    }
  }

  private async startFetch(upstream: UpstreamConfig, repo: string, digest: string) {
    const res = await this.upstreamCall(upstream, () => this.client(upstream).getBlob(repo, digest));
    if (!res) throw blobUnknown(repo, digest);
    const log = { upstream: upstream.name, repo, digest };
    let writer: BlobWriter | undefined;
    if (await this.cache.canStore(res.size ?? 0)) {
      writer = await this.store.writer(digest).catch((err: unknown) => {
        this.logger.warn({ ...log, err: (err as Error).message }, 'cannot create a temp file');
        return undefined;
      });
    }
    if (!writer) this.cache.passThrough(log, undefined);
    const fetch = new BlobFetch(digest, res, writer, this.store.path(digest), {
      onPassThrough: (err) => this.cache.passThrough(log, err),
      beforeInstall: () => this.cache.unlinked(digest),
    });
    const started = Date.now();
    // Held until the row is written: an eviction pass must not unlink the file this fetch
    // renames into place before the index knows of it.
    const release = this.cache.hold(digest);
    this.metrics.fetchesInFlight.inc();
    this.logger.info({ ...log, bytes: res.size }, 'fetch started');

    const finished = fetch
      .run((n) => this.metrics.upstreamBytes.inc({ upstream: upstream.name }, n))
      .then(({ bytes, stored }) => {
        if (!stored) return false;
        this.index.putBlob(digest, bytes, null);
        this.index.addRepo(digest, upstream.name, repo);
        this.grow(bytes);
        this.logger.info({ ...log, bytes, ms: Date.now() - started }, 'fetch stored');
        return true;
      })
      .catch((err: WharfError) => {
        this.metrics.fetchFailures.inc({ reason: err.code });
        this.health.failed(upstream.name, err);
        this.logger.warn({ ...log, err: err.message, code: err.code }, 'fetch discarded');
        return false;
      })
      .finally(() => {
        release();
        this.metrics.fetchesInFlight.dec();
      });
    return { fetch, finished };
  }

  // ---- tag lists -------------------------------------------------------------------------

  /**
   * A page of a repository's tags, as the upstream lists them. When the upstream cannot be
   * asked, the tags the mirror has seen there are listed instead, and said so: runners that
   * look up tags keep working while the origin is down.
   */
  async tags(upstream: UpstreamConfig, repo: string, query: TagQuery): Promise<TagPage & { outcome: Outcome }> {
    try {
      const page = await this.upstreamCall(upstream, () => this.client(upstream).listTags(repo, query));
      if (!page) {
        throw new WharfError('WHARF_NAME_UNKNOWN', `repository ${repo} is not at upstream ${upstream.name}`, {
          hint: 'check the repository name',
        });
      }
      // An upstream that ignores `n` and `last` (distribution 2.x does) sends the whole list
      // without a next link: the mirror pages it as the client asked.
      if (page.next !== undefined) return { ...page, outcome: 'miss' };
      return { ...pageOf([...page.tags].sort(), query), outcome: 'miss' };
    } catch (err) {
      const known = isUnavailable(err) ? this.index.tagsOf(upstream.name, repo) : [];
      if (known.length === 0) throw err;
      this.metrics.staleServed.inc({ upstream: upstream.name });
      this.logger.warn(
        { upstream: upstream.name, repo, err: (err as Error).message },
        'serving the tags seen before: the upstream is unavailable',
      );
      return { ...pageOf(known, query), outcome: 'stale' };
    }
  }

  // ---- shared ----------------------------------------------------------------------------

  /** Calls an upstream, keeping its up/down state and error metrics current. */
  private async upstreamCall<T>(upstream: UpstreamConfig, call: () => Promise<T>): Promise<T> {
    try {
      const result = await call();
      this.health.ok(upstream.name);
      return result;
    } catch (err) {
      this.health.failed(upstream.name, err);
      throw err;
    }
  }

  private grow(bytes: number): void {
    this.cache.grow(bytes);
  }

  private forget(digest: string, size: number): void {
    this.index.deleteBlob(digest);
    this.grow(-size);
  }
}

/** A page of a lexically sorted tag list, the way the distribution spec pages `tags/list`. */
function pageOf(sorted: string[], query: TagQuery): TagPage {
  const after = query.last;
  const from = after === undefined ? 0 : sorted.findIndex((t) => t > after);
  const rest = from < 0 ? [] : sorted.slice(from);
  if (query.n === undefined || rest.length <= query.n) return { tags: rest };
  const tags = rest.slice(0, query.n);
  return { tags, next: tags.at(-1) };
}

function manifestUnknown(repo: string, ref: string): WharfError {
  return new WharfError('WHARF_MANIFEST_UNKNOWN', `manifest ${repo}:${ref} is not at its upstream`, {
    hint: 'check the image name and tag',
  });
}

function blobUnknown(repo: string, digest: string): WharfError {
  return new WharfError('WHARF_BLOB_UNKNOWN', `blob ${digest} is not in ${repo} at its upstream`);
}

