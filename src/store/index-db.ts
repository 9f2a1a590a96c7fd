import Database from 'better-sqlite3';
import type { UpstreamConfig } from '../mirror/config.js';

export interface BlobRow {
  digest: string;
  size: number;
  /** Set for manifests and indexes, which are stored as blobs too. */
  media_type: string | null;
  stored_at: number;
  last_access: number;
}

export interface TagRow {
  upstream: string;
  repo: string;
  tag: string;
  digest: string;
  confirmed_at: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS blobs (
  digest TEXT PRIMARY KEY,
  size INTEGER NOT NULL,
  media_type TEXT,
  stored_at INTEGER NOT NULL,
  last_access INTEGER NOT NULL
);
-- Eviction pages through blobs in (last_access, digest) order; the digest makes the order
-- total, and having it in the index spares a sort of every blob sharing a timestamp.
DROP INDEX IF EXISTS blobs_last_access;
CREATE INDEX IF NOT EXISTS blobs_lru ON blobs (last_access, digest);
-- The repositories a blob was verified for at its upstream: it is served under no other.
CREATE TABLE IF NOT EXISTS blob_repos (
  digest TEXT NOT NULL,
  upstream TEXT NOT NULL,
  repo TEXT NOT NULL,
  verified_at INTEGER NOT NULL,
  PRIMARY KEY (digest, upstream, repo)
);
CREATE INDEX IF NOT EXISTS blob_repos_repo ON blob_repos (upstream, repo);
CREATE TABLE IF NOT EXISTS tags (
  upstream TEXT NOT NULL,
  repo TEXT NOT NULL,
  tag TEXT NOT NULL,
  digest TEXT NOT NULL,
  confirmed_at INTEGER NOT NULL,
  PRIMARY KEY (upstream, repo, tag)
);
CREATE INDEX IF NOT EXISTS tags_digest ON tags (digest);
-- What a manifest or index refers to, so eviction can tell what is still in use.
CREATE TABLE IF NOT EXISTS refs (
  parent TEXT NOT NULL,
  child TEXT NOT NULL,
  PRIMARY KEY (parent, child)
);
CREATE INDEX IF NOT EXISTS refs_child ON refs (child);
-- Images kept whatever the budget: from the config file or \`wharf cache pin\`.
CREATE TABLE IF NOT EXISTS pins (
  image TEXT PRIMARY KEY,
  platforms TEXT,
  origin TEXT NOT NULL,
  added_at INTEGER NOT NULL
);
-- What each pin resolved to when it was last refreshed: never evicted.
CREATE TABLE IF NOT EXISTS pinned_blobs (
  image TEXT NOT NULL,
  digest TEXT NOT NULL,
  PRIMARY KEY (image, digest)
);
CREATE INDEX IF NOT EXISTS pinned_blobs_digest ON pinned_blobs (digest);
-- Every upstream NAME a mirror on this folder has had, and its URL, without credentials. What
-- the mirror verified is kept under the NAME: a NAME that now points elsewhere must forget it.
-- \`active\` marks those of the mirror that started last, which \`wharf cache pin\` checks against.
CREATE TABLE IF NOT EXISTS upstreams (
  name TEXT PRIMARY KEY,
  url TEXT NOT NULL,
  is_default INTEGER NOT NULL,
  active INTEGER NOT NULL
);
`;

export interface PinRow {
  image: string;
  /** JSON list of `os/arch[/variant]`, or null for every platform. */
  platforms: string | null;
  origin: 'config' | 'cli';
  added_at: number;
}

const TOUCH_FLUSH_MS = 1000;

/** The SQLite index of the blob store: what is stored, for which repositories, and tags. */
export class IndexDb {
  readonly db: Database.Database;
  private readonly stmts;
  private readonly touches = new Map<string, number>();
  private touchTimer: NodeJS.Timeout | undefined;
  private touchesFailing = false;
  /**
   * Told when recorded uses cannot be written (the first failure of a run of them); the index
   * has no logger, its owner logs. The uses are kept and written again a second later.
   */
  onTouchFlushError: ((err: Error, pending: number) => void) | undefined;

  constructor(file: string) {
    this.db = new Database(file);
    try {
      // busy_timeout first: a writer holding the lock must make the pragmas below wait, not
      // fail. WAL lets `wharf cache` commands read while the mirror writes; NORMAL sync is
      // safe with WAL (a crash loses at most the last transactions, never consistency), and
      // the blob files, which are fsynced, are the source of truth recovery rebuilds from.
      this.db.pragma('busy_timeout = 5000');
      this.db.pragma('journal_mode = WAL');
      this.db.pragma('synchronous = NORMAL');
      this.db.exec(SCHEMA);
    } catch (err) {
      // Closed here, so a file found corrupt can be moved aside with no handle left on it.
      this.db.close();
      throw err;
    }
    const db = this.db;
    this.stmts = {
      getBlob: db.prepare<[string], BlobRow>('SELECT * FROM blobs WHERE digest = ?'),
      putBlob: db.prepare(
        `INSERT INTO blobs (digest, size, media_type, stored_at, last_access)
         VALUES (@digest, @size, @media_type, @now, @now)
         ON CONFLICT (digest) DO UPDATE SET size = @size, last_access = @now,
           media_type = COALESCE(@media_type, media_type)`,
      ),
      touch: db.prepare('UPDATE blobs SET last_access = ? WHERE digest = ?'),
      deleteBlob: db.prepare('DELETE FROM blobs WHERE digest = ?'),
      deleteBlobRepos: db.prepare('DELETE FROM blob_repos WHERE digest = ?'),
      deleteRefs: db.prepare('DELETE FROM refs WHERE parent = ?'),
      deleteTagsTo: db.prepare('DELETE FROM tags WHERE digest = ?'),
      verified: db.prepare<[string, string, string], { n: number }>(
        'SELECT 1 AS n FROM blob_repos WHERE digest = ? AND upstream = ? AND repo = ?',
      ),
      addRepo: db.prepare(
        `INSERT INTO blob_repos (digest, upstream, repo, verified_at) VALUES (?, ?, ?, ?)
         ON CONFLICT DO UPDATE SET verified_at = excluded.verified_at`,
      ),
      getTag: db.prepare<[string, string, string], TagRow>(
        'SELECT * FROM tags WHERE upstream = ? AND repo = ? AND tag = ?',
      ),
      putTag: db.prepare(
        `INSERT INTO tags (upstream, repo, tag, digest, confirmed_at) VALUES (?, ?, ?, ?, ?)
         ON CONFLICT DO UPDATE SET digest = excluded.digest, confirmed_at = excluded.confirmed_at`,
      ),
      deleteTag: db.prepare('DELETE FROM tags WHERE upstream = ? AND repo = ? AND tag = ?'),
      tagsOf: db.prepare<[string, string], { tag: string }>(
        'SELECT tag FROM tags WHERE upstream = ? AND repo = ? ORDER BY tag',
      ),
      addRef: db.prepare('INSERT OR IGNORE INTO refs (parent, child) VALUES (?, ?)'),
      totalSize: db.prepare<[], { total: number | null }>('SELECT SUM(size) AS total FROM blobs'),
      lruPage: db.prepare<[number, string, number], BlobRow>(
        `SELECT * FROM blobs WHERE media_type IS NULL AND (last_access, digest) > (?, ?)
         ORDER BY last_access, digest LIMIT ?`,
      ),
      // Manifests none of whose configs and layers are stored any more, looked for through
      // the whole tree: an index reaches its content only through its platform manifests, so
      // asking just for direct children (or for a parent) would keep an index and its
      // manifests for ever. An index goes together with its manifests, as none of them has
      // content left. A manifest used after `idleSince`, anywhere in the tree, keeps the tree:
      // a client that has just fetched it is still fetching what it refers to.
      orphanManifests: db.prepare<[number], BlobRow>(
        `WITH RECURSIVE reach(root, digest) AS (
           SELECT digest, digest FROM blobs WHERE media_type IS NOT NULL
           UNION
           SELECT t.root, r.child FROM refs r JOIN reach t ON r.parent = t.digest
         ),
         live(root) AS (
           SELECT t.root FROM reach t JOIN blobs c ON c.digest = t.digest
           WHERE c.media_type IS NULL OR c.last_access > ?
         )
         SELECT * FROM blobs b WHERE b.media_type IS NOT NULL
           AND b.digest NOT IN (SELECT root FROM live)
           AND NOT EXISTS (SELECT 1 FROM pinned_blobs pb WHERE pb.digest = b.digest)`,
      ),
      allBlobs: db.prepare<[], BlobRow>('SELECT * FROM blobs'),
      addPin: db.prepare(
        `INSERT INTO pins (image, platforms, origin, added_at) VALUES (?, ?, ?, ?)
         ON CONFLICT DO UPDATE SET platforms = excluded.platforms`,
      ),
      removePin: db.prepare('DELETE FROM pins WHERE image = ?'),
      removePinnedBlobs: db.prepare('DELETE FROM pinned_blobs WHERE image = ?'),
      addPinnedBlob: db.prepare('INSERT OR IGNORE INTO pinned_blobs (image, digest) VALUES (?, ?)'),
      listPins: db.prepare<[], PinRow>('SELECT * FROM pins ORDER BY image'),
      deactivateUpstreams: db.prepare('UPDATE upstreams SET active = 0'),
      upstreamUrl: db.prepare<[string], { url: string }>('SELECT url FROM upstreams WHERE name = ?'),
      putUpstream: db.prepare(
        `INSERT INTO upstreams (name, url, is_default, active) VALUES (?, ?, ?, 1)
         ON CONFLICT DO UPDATE SET url = excluded.url, is_default = excluded.is_default, active = 1`,
      ),
      forgetVerifiedRepos: db.prepare('DELETE FROM blob_repos WHERE upstream = ?'),
      forgetTags: db.prepare('DELETE FROM tags WHERE upstream = ?'),
      upstreams: db.prepare<[], { name: string; url: string; is_default: number }>(
        'SELECT * FROM upstreams WHERE active = 1 ORDER BY name',
      ),
      pinnedDigestsOf: db.prepare<[string], { digest: string }>(
        'SELECT digest FROM pinned_blobs WHERE image = ?',
      ),
      pinnedDigests: db.prepare<[], { digest: string }>('SELECT DISTINCT digest FROM pinned_blobs'),
      isPinned: db.prepare<[string], { n: number }>(
        'SELECT 1 AS n FROM pinned_blobs WHERE digest = ? LIMIT 1',
      ),
      pinnedBytes: db.prepare<[], { total: number | null }>(
        `SELECT SUM(size) AS total FROM blobs
         WHERE digest IN (SELECT DISTINCT digest FROM pinned_blobs)`,
      ),
      tags: db.prepare<[], TagRow>('SELECT * FROM tags ORDER BY upstream, repo, tag'),
      reposOf: db.prepare<[string], { upstream: string; repo: string }>(
        'SELECT upstream, repo FROM blob_repos WHERE digest = ?',
      ),
    };
  }

  getBlob(digest: string): BlobRow | undefined {
    return this.stmts.getBlob.get(digest);
  }

  putBlob(digest: string, size: number, mediaType: string | null, now = Date.now()): void {
    this.stmts.putBlob.run({ digest, size, media_type: mediaType, now });
  }

  /**
   * Records a use of a blob. Uses are kept in memory and written in one transaction a second
   * later: a write per cached-blob request would put SQLite on the hot path.
   */
  touch(digest: string, now = Date.now()): void {
    this.touches.set(digest, now);
    this.scheduleFlush();
  }

  /**
   * Writes pending uses; eviction calls it first so it ranks blobs by their latest use.
   * Never throws: it runs from a timer, where SQLITE_FULL (a full disk) or SQLITE_BUSY (a
   * `wharf cache` command holding the lock) would crash the mirror. Uses that could not be
   * written stay pending for the next try; losing them only makes eviction less exact.
   */
  flushTouches(): void {
    clearTimeout(this.touchTimer);
    this.touchTimer = undefined;
    if (this.touches.size === 0 || !this.db.open) return;
    const pending = [...this.touches];
    this.touches.clear();
    try {
      this.db.transaction(() => {
        for (const [digest, at] of pending) this.stmts.touch.run(at, digest);
      })();
      this.touchesFailing = false;
    } catch (err) {
      // Uses recorded meanwhile are newer and win.
      for (const [digest, at] of pending) if (!this.touches.has(digest)) this.touches.set(digest, at);
      if (this.db.open) this.scheduleFlush();
      // Once per run of failures: a disk that stays full would otherwise log every second.
      if (!this.touchesFailing) this.onTouchFlushError?.(err as Error, this.touches.size);
      this.touchesFailing = true;
    }
  }

  private scheduleFlush(): void {
    this.touchTimer ??= setTimeout(() => this.flushTouches(), TOUCH_FLUSH_MS).unref();
  }

  isVerifiedFor(digest: string, upstream: string, repo: string): boolean {
    return this.stmts.verified.get(digest, upstream, repo) !== undefined;
  }

  addRepo(digest: string, upstream: string, repo: string, now = Date.now()): void {
    this.stmts.addRepo.run(digest, upstream, repo, now);
  }

  /** Records a stored manifest with the repository it came from and what it refers to. */
  putManifest(
    digest: string,
    size: number,
    mediaType: string,
    upstream: string,
    repo: string,
    children: string[],
  ): void {
    this.db.transaction(() => {
      this.putBlob(digest, size, mediaType);
      this.addRepo(digest, upstream, repo);
      for (const child of children) this.stmts.addRef.run(digest, child);
    })();
  }

  /** Records what a manifest refers to; recovery does, for manifests it takes back. */
  addRefs(parent: string, children: string[]): void {
    this.db.transaction(() => {
      for (const child of children) this.stmts.addRef.run(parent, child);
    })();
  }

  getTag(upstream: string, repo: string, tag: string): TagRow | undefined {
    return this.stmts.getTag.get(upstream, repo, tag);
  }

  putTag(upstream: string, repo: string, tag: string, digest: string, now = Date.now()): void {
    this.stmts.putTag.run(upstream, repo, tag, digest, now);
  }

  /** The tags of a repository the mirror has seen at its upstream, in lexical order. */
  tagsOf(upstream: string, repo: string): string[] {
    return this.stmts.tagsOf.all(upstream, repo).map((row) => row.tag);
  }

  deleteTag(upstream: string, repo: string, tag: string): void {
    this.stmts.deleteTag.run(upstream, repo, tag);
  }

  /** Forgets a blob entirely: its row, the repositories it was verified for, what it refers to. */
  deleteBlob(digest: string): void {
    this.db.transaction(() => {
      this.stmts.deleteBlob.run(digest);
      this.stmts.deleteBlobRepos.run(digest);
      this.stmts.deleteRefs.run(digest);
      this.stmts.deleteTagsTo.run(digest);
    })();
  }

  /** Layers and configs, least recently used first, a page at a time after a cursor. */
  lruPage(after: { last_access: number; digest: string }, limit: number): BlobRow[] {
    return this.stmts.lruPage.all(after.last_access, after.digest, limit);
  }

  /**
   * Manifests and indexes with no config or layer left under them, pinned ones aside, whose
   * tree holds no manifest used after `idleSince` (a time in ms).
   */
  orphanManifests(idleSince: number): BlobRow[] {
    return this.stmts.orphanManifests.all(idleSince);
  }

  allBlobs(): BlobRow[] {
    return this.stmts.allBlobs.all();
  }

  tags(): TagRow[] {
    return this.stmts.tags.all();
  }

  reposOf(digest: string): { upstream: string; repo: string }[] {
    return this.stmts.reposOf.all(digest);
  }

  addPin(image: string, platforms: string[] | undefined, origin: PinRow['origin']): void {
    this.stmts.addPin.run(image, platforms ? JSON.stringify(platforms) : null, origin, Date.now());
  }

  /** Drops a pin and releases what it held; returns whether there was one. */
  removePin(image: string): boolean {
    return this.db.transaction(() => {
      this.stmts.removePinnedBlobs.run(image);
      return this.stmts.removePin.run(image).changes > 0;
    })();
  }

  listPins(): PinRow[] {
    return this.stmts.listPins.all();
  }

  /**
   * Records a starting mirror's upstreams, without credentials. A NAME that pointed at another
   * URL before loses what was verified under it, tags and the repositories each blob was
   * confirmed for: those were the other registry's answers. The blobs themselves stay, since
   * their content is their digest, and serve again once the new URL confirms them. Returns the
   * NAMEs that moved, with their old and new URLs.
   */
  recordUpstreams(upstreams: readonly UpstreamConfig[]): { name: string; was: string; url: string }[] {
    return this.db.transaction(() => {
      const moved: { name: string; was: string; url: string }[] = [];
      this.stmts.deactivateUpstreams.run();
      for (const u of upstreams) {
        const was = this.stmts.upstreamUrl.get(u.name)?.url;
        if (was !== undefined && was !== u.url) {
          this.stmts.forgetVerifiedRepos.run(u.name);
          this.stmts.forgetTags.run(u.name);
          moved.push({ name: u.name, was, url: u.url });
        }
        this.stmts.putUpstream.run(u.name, u.url, u.default ? 1 : 0);
      }
      return moved;
    })();
  }

  /** The upstreams recordUpstreams() last wrote, without credentials; empty before any. */
  recordedUpstreams(): UpstreamConfig[] {
    return this.stmts.upstreams.all().map((r) => ({ name: r.name, url: r.url, default: r.is_default === 1 }));
  }

  /** Replaces what a pin holds with what it resolves to now. */
  setPinnedBlobs(image: string, digests: Iterable<string>): void {
    this.db.transaction(() => {
      this.stmts.removePinnedBlobs.run(image);
      for (const d of digests) this.stmts.addPinnedBlob.run(image, d);
    })();
  }

  pinnedDigestsOf(image: string): string[] {
    return this.stmts.pinnedDigestsOf.all(image).map((r) => r.digest);
  }

  pinnedDigests(): Set<string> {
    return new Set(this.stmts.pinnedDigests.all().map((r) => r.digest));
  }

  isPinned(digest: string): boolean {
    return this.stmts.isPinned.get(digest) !== undefined;
  }

  pinnedBytes(): number {
    return this.stmts.pinnedBytes.get()?.total ?? 0;
  }

  /** What SQLite's quick_check finds wrong with the file; empty when it is sound. */
  quickCheck(): string[] {
    const rows = this.db.pragma('quick_check') as { quick_check: string }[];
    return rows.map((r) => r.quick_check).filter((line) => line !== 'ok');
  }

  totalSize(): number {
    return this.stmts.totalSize.get()?.total ?? 0;
  }

  close(): void {
    this.flushTouches();
    clearTimeout(this.touchTimer);
    this.db.close();
  }
}
