import type { IndexDb } from './index-db.js';

export interface TagEntry {
  /** `upstream/repo:tag`, or `upstream/repo@digest` for an image pulled by digest alone. */
  image: string;
  digest: string;
  /** Bytes stored for the image: manifest, child manifests, configs and layers. */
  size: number;
  lastUse: number;
  /** When the upstream last confirmed the tag; null for an image held by digest alone. */
  confirmedAt: number | null;
  pinned: boolean;
}

export interface Usage {
  totalBytes: number;
  blobs: number;
  manifests: number;
  pinnedBytes: number;
  /** A blob verified for several repositories counts in each of them. */
  byRepository: { repository: string; bytes: number; blobs: number; manifests: number }[];
}

export interface PinEntry {
  /** As it was pinned: by registry host or upstream NAME. */
  image: string;
  /** `os/arch[/variant]` kept of an index; null for all of them. */
  platforms: string[] | null;
  origin: 'config' | 'cli';
  addedAt: number;
  /** What the pin held when the mirror last refreshed it; 0 before the first refresh. */
  blobs: number;
  bytes: number;
}

/**
 * What `wharf cache ls` shows: every cached tag, then every image held by digest alone (a
 * manifest or index no tag points at and no index contains), with the bytes each holds and
 * its last use.
 */
export function listTags(index: IndexDb): TagEntry[] {
  const pinned = index.pinnedDigests();
  const sizeOf = index.db.prepare<[string], { size: number; last: number }>(
    `WITH RECURSIVE tree(digest) AS (
       SELECT ? UNION SELECT r.child FROM refs r JOIN tree t ON r.parent = t.digest
     )
     SELECT COALESCE(SUM(b.size), 0) AS size, COALESCE(MAX(b.last_access), 0) AS last
     FROM blobs b WHERE b.digest IN (SELECT digest FROM tree)`,
  );
  const entry = (image: string, digest: string, confirmedAt: number | null): TagEntry => {
    const { size, last } = sizeOf.get(digest) ?? { size: 0, last: 0 };
    return { image, digest, size, lastUse: last, confirmedAt, pinned: pinned.has(digest) };
  };
  const untagged = index.db
    .prepare<[], { digest: string; upstream: string; repo: string }>(
      `SELECT b.digest, r.upstream, r.repo FROM blobs b JOIN blob_repos r ON r.digest = b.digest
       WHERE b.media_type IS NOT NULL
         AND NOT EXISTS (SELECT 1 FROM tags t WHERE t.digest = b.digest)
         AND NOT EXISTS (SELECT 1 FROM refs f WHERE f.child = b.digest)
       ORDER BY r.upstream, r.repo, b.digest`,
    )
    .all();
  return [
    ...index.tags().map((t) => entry(`${t.upstream}/${t.repo}:${t.tag}`, t.digest, t.confirmed_at)),
    ...untagged.map((u) => entry(`${u.upstream}/${u.repo}@${u.digest}`, u.digest, null)),
  ];
}

/** What `wharf cache du` shows. */
export function usage(index: IndexDb): Usage {
  const totals = index.db
    .prepare<[], { bytes: number | null; blobs: number; manifests: number | null }>(
      `SELECT SUM(size) AS bytes, COUNT(*) AS blobs,
              SUM(CASE WHEN media_type IS NULL THEN 0 ELSE 1 END) AS manifests FROM blobs`,
    )
    .get()!;
  const byRepository = index.db
    .prepare<[], { repository: string; bytes: number; blobs: number; manifests: number }>(
      `SELECT r.upstream || '/' || r.repo AS repository, SUM(b.size) AS bytes,
              SUM(CASE WHEN b.media_type IS NULL THEN 1 ELSE 0 END) AS blobs,
              SUM(CASE WHEN b.media_type IS NULL THEN 0 ELSE 1 END) AS manifests
       FROM blob_repos r JOIN blobs b ON b.digest = r.digest
       GROUP BY r.upstream, r.repo ORDER BY bytes DESC`,
    )
    .all();
  return {
    totalBytes: totals.bytes ?? 0,
    blobs: totals.blobs - (totals.manifests ?? 0),
    manifests: totals.manifests ?? 0,
    pinnedBytes: index.pinnedBytes(),
    byRepository,
  };
}

/** What `wharf cache pins` shows: every pin, and what it holds in the store now. */
export function listPins(index: IndexDb): PinEntry[] {
  const held = index.db.prepare<[string], { blobs: number; bytes: number | null }>(
    `SELECT COUNT(b.digest) AS blobs, SUM(b.size) AS bytes
     FROM pinned_blobs p JOIN blobs b ON b.digest = p.digest WHERE p.image = ?`,
  );
  return index.listPins().map((pin) => {
    const { blobs, bytes } = held.get(pin.image) ?? { blobs: 0, bytes: 0 };
    return {
      image: pin.image,
      platforms: pin.platforms ? (JSON.parse(pin.platforms) as string[]) : null,
      origin: pin.origin,
      addedAt: pin.added_at,
      blobs,
      bytes: bytes ?? 0,
    };
  });
}
