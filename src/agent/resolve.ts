import { WharfError, toWharfError } from '../errors.js';
import type { Engine } from '../engine/types.js';
import { isIndexType, isManifestType } from '../oci/media-types.js';
import {
  choosePlatform,
  formatPlatform,
  normalizeArchitecture,
  platformOf,
  windowsBuildOfEngine,
  type PlatformSpec,
} from '../oci/platform.js';
import { formatImageRef, type ImageRef } from '../oci/reference.js';
import type { Source } from './sources.js';

export interface SourceFailure {
  source: Source;
  phase: 'resolve' | 'pull';
  error: WharfError;
}

export interface Resolved {
  digest: string;
  /** Unknown when the user named a digest and nothing was asked yet. */
  mediaType: string | undefined;
  /** Where the digest came from; undefined for a digest the user gave. */
  source: Source | undefined;
}

/**
 * Resolves a tag to the digest it names now: the mirror first, the origin when the mirror
 * does not answer or does not know the tag. Failures are collected, not thrown, so the caller
 * can decide between an error and an older local copy.
 */
export async function resolveTag(
  image: ImageRef,
  sources: Source[],
  failures: SourceFailure[],
  onFailure: (failure: SourceFailure) => void,
): Promise<Resolved | undefined> {
  if (image.digest) return { digest: image.digest, mediaType: undefined, source: undefined };
  const tag = image.tag ?? 'latest';
  for (const source of sources) {
    try {
      const head = await source.client.headManifest(source.repo, tag);
      if (head) return { digest: head.digest, mediaType: head.mediaType, source };
      const unknown = new WharfError(
        'WHARF_MANIFEST_UNKNOWN',
        `${source.kind} has no ${formatImageRef(image)}`,
        { hint: 'check the image name and tag', detail: { source: source.kind } },
      );
      failures.push({ source, phase: 'resolve', error: unknown });
      onFailure(failures.at(-1)!);
    } catch (err) {
      failures.push({ source, phase: 'resolve', error: toWharfError(err) });
      onFailure(failures.at(-1)!);
    }
  }
  return undefined;
}

/** What to ask the engine for: a digest, and a platform when it picks from an index. */
export interface PullPlan {
  /** The digest to pull: the index's (the engine picks) or a chosen entry's. */
  digest: string;
  /** `os/arch[/variant]` for the engine to pick from an index. */
  enginePlatform?: string;
  /** The entry chosen from an index. */
  chosen?: { digest: string; platform: PlatformSpec };
}

const hostCache = new WeakMap<Engine, Promise<PlatformSpec>>();

/** The platform the engine runs images for, its Windows build included. */
export function hostPlatform(engine: Engine): Promise<PlatformSpec> {
  let host = hostCache.get(engine);
  if (!host) {
    host = (async () => {
      const [version, info] = await Promise.all([engine.version(), engine.info()]);
      const spec: PlatformSpec = {
        os: version.Os.toLowerCase(),
        architecture: normalizeArchitecture(version.Arch),
      };
      const build = spec.os === 'windows' ? windowsBuildOfEngine(info) : undefined;
      if (build) spec.osVersion = build;
      return spec;
    })();
    host.catch(() => hostCache.delete(engine));
    hostCache.set(engine, host);
  }
  return host;
}

/**
 * Plans the pull of a resolved digest. A single manifest is pulled as it is. From an index,
 * wharf chooses the entry (Windows builds are where engines and users disagree most), then
 * lets a Linux engine pull the index itself with that platform, so the engine records the
 * index digest the tag resolves to and the next check needs no second request. A Windows entry
 * is pulled by its own digest: the engine's own pick among builds may differ from wharf's.
 */
export async function planPull(
  resolved: Resolved,
  sources: Source[],
  wanted: { host: () => Promise<PlatformSpec>; requested: PlatformSpec | undefined },
): Promise<PullPlan> {
  if (isManifestType(resolved.mediaType)) return { digest: resolved.digest };
  if (resolved.mediaType && !isIndexType(resolved.mediaType)) return { digest: resolved.digest };

  let lastError: unknown;
  for (const source of sources) {
    let fetched;
    try {
      fetched = await source.client.getManifest(source.repo, resolved.digest);
    } catch (err) {
      lastError = err;
      continue;
    }
    if (!fetched) continue;
    if (fetched.parsed.kind === 'manifest') return { digest: resolved.digest };
    const host = await wanted.host();
    const entry = choosePlatform(fetched.parsed, { host, requested: wanted.requested });
    const platform = platformOf(entry)!;
    const plan: PullPlan = { digest: resolved.digest, chosen: { digest: entry.digest, platform } };
    if (platform.os === 'windows') {
      plan.digest = entry.digest;
    } else {
      plan.enginePlatform = formatPlatform({ ...platform, osVersion: undefined });
    }
    return plan;
  }
  if (lastError) throw toWharfError(lastError);
  throw new WharfError('WHARF_MANIFEST_UNKNOWN', `no registry has manifest ${resolved.digest}`, {
    hint: 'the tag moved while wharf read it, or the mirror and origin disagree; try again',
  });
}
