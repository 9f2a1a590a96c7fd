import { performance } from 'node:perf_hooks';
import type { Dispatcher } from 'undici';
import { WharfError, isWharfError, toWharfError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { registryAuthFor } from '../engine/registry-auth.js';
import type { Engine, ImageInspect, PullResult } from '../engine/types.js';
import { formatPlatform, normalizeArchitecture, type PlatformSpec } from '../oci/platform.js';
import { formatImageRef, parseImageRef, type ImageRef } from '../oci/reference.js';
import { summarize, type EnsureResult, type EnsureSource, type EventSink } from './events.js';
import {
  hostPlatform,
  planPull,
  resolveTag,
  type PullPlan,
  type SourceFailure,
} from './resolve.js';
import { sourcesFor, type Source } from './sources.js';

/** Defaults of `wharf ensure`, in one place with their units. */
export const ENSURE_DEFAULTS = {
  /** A pull stream silent this long while downloading is cut and started again, ms. */
  stallMs: 60_000,
  /** How often a stalled pull is started again before the next source is tried. */
  stallRetries: 2,
  /**
   * Layer downloads the engine may start over against the mirror before the origin is tried.
   * One absorbs a blip; the engine would otherwise wait out four growing delays (50 s in all)
   * against a mirror that cannot serve the layer.
   */
  mirrorRetries: 1,
};

export interface EnsureOptions {
  engine: Engine;
  mirror?: URL;
  /** `--platform`: overrides the engine's os, architecture or Windows build. */
  platform?: PlatformSpec;
  /** Accept the copy on the engine, unchecked, when neither the mirror nor the origin answers. */
  allowStale?: boolean;
  stallMs?: number;
  stallRetries?: number;
  signal?: AbortSignal;
  logger?: Logger;
  /** For registry requests; tests and warm share one. */
  dispatcher?: Dispatcher;
  onEvent?: EventSink;
  /** The docker `config.json` to read registry credentials from; the user's by default. */
  dockerConfig?: string;
}

const seconds = (ms: number) => Math.round(ms) / 1000;

/** The digest parts of an image's `RepoDigests`; the list is missing on built images. */
export function repoDigests(image: ImageInspect | null): Set<string> {
  const digests = new Set<string>();
  for (const entry of image?.RepoDigests ?? []) {
    const at = entry.lastIndexOf('@');
    if (at >= 0) digests.add(entry.slice(at + 1));
  }
  return digests;
}

/**
 * The digest a local copy was pulled at: from a `RepoDigests` entry of one of the image's own
 * repositories when there is one, since an image id may also be known under other names.
 */
export function localDigest(image: ImageInspect, sources: Source[]): string {
  const own = new Set(sources.map((s) => s.engineRepo));
  const entries = image.RepoDigests ?? [];
  const entry = entries.find((e) => own.has(e.slice(0, e.lastIndexOf('@')))) ?? entries[0];
  const at = entry?.lastIndexOf('@') ?? -1;
  return entry && at >= 0 ? entry.slice(at + 1) : image.Id;
}

/** The name the engine knows the image by: `registry/repo:tag`. */
export function localName(image: ImageRef): string {
  return `${image.registry}/${image.repository}:${image.tag ?? 'latest'}`;
}

async function findLocal(engine: Engine, image: ImageRef, sources: Source[]) {
  if (image.tag) return engine.inspectImage(localName(image));
  // Pinned by digest alone: the engine knows it under the name it was pulled by.
  for (const source of [...sources].reverse()) {
    const found = await engine.inspectImage(`${source.engineRepo}@${image.digest}`);
    if (found) return found;
  }
  return null;
}

function platformFits(image: ImageInspect, wanted: PlatformSpec | undefined): boolean {
  if (!wanted) return true;
  return (
    image.Os.toLowerCase() === wanted.os &&
    normalizeArchitecture(image.Architecture) === wanted.architecture &&
    (!wanted.variant || !image.Variant || image.Variant === wanted.variant) &&
    (!wanted.osVersion || !image.OsVersion || image.OsVersion.startsWith(wanted.osVersion))
  );
}

/**
 * Makes an image present on the engine at the digest its tag names now, pulling only when the
 * local copy differs: through the mirror, else from the origin. Throws a WharfError when the
 * image could not be made present.
 */
export async function ensureImage(
  input: string | ImageRef,
  options: EnsureOptions,
): Promise<EnsureResult> {
  const started = performance.now();
  const image = typeof input === 'string' ? parseImageRef(input) : input;
  const name = formatImageRef(image);
  const { engine } = options;
  const emit: EventSink = options.onEvent ?? (() => undefined);
  const logger = options.logger ?? silentLogger();
  const sources = sourcesFor(image, {
    mirror: options.mirror,
    logger,
    dispatcher: options.dispatcher,
  });
  const failures: SourceFailure[] = [];
  const onFailure = (f: SourceFailure) => {
    // The event is how a failure reaches the user, once; a warn here would tell it twice.
    logger.info({ image: name, source: f.source.kind, err: f.error.message }, `${f.phase} failed`);
    emit({ type: 'source-failed', image: name, source: f.source.kind, phase: f.phase,
      error: summarize(f.error) });
  };

  // The engine and the registry are asked at once: for a present image these two answers
  // are all the work there is.
  const [local, resolved] = await Promise.all([
    findLocal(engine, image, sources),
    resolveTag(image, sources, failures, onFailure),
  ]);
  const resolveMs = performance.now() - started;
  const result = (source: EnsureSource, found: ImageInspect, extra: Partial<EnsureResult>) => {
    const out: EnsureResult = {
      image: name,
      digest: resolved?.digest ?? [...repoDigests(found)][0] ?? found.Id,
      source,
      seconds: seconds(performance.now() - started),
      phases: { resolve: seconds(resolveMs), pull: 0 },
      bytes: 0,
      id: found.Id,
      size: found.Size,
      ...extra,
    };
    emit({ type: 'ensured', result: out });
    return out;
  };
  if (!resolved) {
    return staleOrThrow(image, { local, tagResolved: false }, sources, failures, options, result);
  }
  if (resolved.source) {
    emit({ type: 'resolved', image: name, digest: resolved.digest, via: resolved.source.kind,
      ms: Math.round(resolveMs) });
  }

  const have = repoDigests(local);
  if (local && have.has(resolved.digest) && platformFits(local, options.platform)) {
    return result('local', local, {});
  }

  // A source that failed to resolve is not asked again; the one that answered goes first.
  const usable = sources.filter((s) => !failures.some((f) => f.source === s));
  const plan = await planPull(resolved, usable, {
    host: () => hostPlatform(engine),
    requested: options.platform,
  });
  const chosen = plan.chosen
    ? { platformDigest: plan.chosen.digest, platform: formatPlatform(plan.chosen.platform) }
    : {};
  if (local && plan.chosen && have.has(plan.chosen.digest)) {
    return result('local', local, chosen);
  }

  const pullStarted = performance.now();
  for (const source of usable) {
    try {
      const pulled = await pullFrom(source, plan, name, options);
      const present = await tagAndCheck(engine, image, source, plan);
      return result(source.kind, present, {
        ...chosen,
        // Choosing the platform from an index is part of resolving what to pull.
        phases: {
          resolve: seconds(pullStarted - started),
          pull: seconds(performance.now() - pullStarted),
        },
        bytes: pulled.bytes,
      });
    } catch (err) {
      if (options.signal?.aborted) throw err;
      failures.push({ source, phase: 'pull', error: toWharfError(err) });
      onFailure(failures.at(-1)!);
    }
  }
  return staleOrThrow(image, { local, tagResolved: true }, sources, failures, options, result);
}

async function pullFrom(
  source: Source,
  plan: PullPlan,
  name: string,
  options: EnsureOptions,
): Promise<PullResult> {
  const ref = `${source.engineRepo}@${plan.digest}`;
  const registryAuth = await registryAuthFor(source.host, options.dockerConfig);
  const retries = options.stallRetries ?? ENSURE_DEFAULTS.stallRetries;
  const emit: EventSink = options.onEvent ?? (() => undefined);
  emit({ type: 'pull-start', image: name, source: source.kind, ref });

  for (let attempt = 1; ; attempt++) {
    try {
      return await options.engine.pull(ref, {
        platform: plan.enginePlatform,
        registryAuth,
        stallMs: options.stallMs ?? ENSURE_DEFAULTS.stallMs,
        // The origin is the last source: there the engine's own retries are all there is.
        maxRetries: source.kind === 'mirror' ? ENSURE_DEFAULTS.mirrorRetries : undefined,
        signal: options.signal,
        onProgress: (p) => emit({ type: 'pull-progress', image: name, source: source.kind,
          bytes: p.bytes, total: p.total }),
      });
    } catch (err) {
      // A stall is the network's fault more often than the registry's: the engine keeps the
      // layers it finished, so starting again loses little.
      if (!isWharfError(err, 'WHARF_PULL_STALLED') || attempt > retries) throw err;
      emit({ type: 'pull-retry', image: name, attempt, delayMs: 0, error: summarize(err) });
    }
  }
}

/**
 * Gives the pulled image its own name and tag, and checks that the name now points at what
 * was pulled, for the platform that was chosen.
 */
async function tagAndCheck(
  engine: Engine,
  image: ImageRef,
  source: Source,
  plan: PullPlan,
): Promise<ImageInspect> {
  const pulledRef = `${source.engineRepo}@${plan.digest}`;
  const pulled = await engine.inspectImage(pulledRef);
  if (!pulled) {
    throw new WharfError('WHARF_PULL_FAILED', `the engine has no ${pulledRef} after pulling it`, {
      hint: 'another process may have removed it; try again',
    });
  }
  if (!image.tag) return pulled;

  await engine.tag(pulledRef, `${image.registry}/${image.repository}`, image.tag);
  const tagged = await engine.inspectImage(localName(image));
  if (!tagged || tagged.Id !== pulled.Id) {
    const what = `${localName(image)} does not point at ${pulledRef}`;
    throw new WharfError('WHARF_PULL_FAILED', what, {
      hint: 'another process retagged the image meanwhile; try again',
    });
  }
  if (plan.chosen && !platformFits(tagged, plan.chosen.platform)) {
    throw new WharfError(
      'WHARF_PULL_FAILED',
      `the engine pulled ${tagged.Os}/${tagged.Architecture} for ${localName(image)}, ` +
        `not ${formatPlatform(plan.chosen.platform)}`,
      { hint: 'pass --platform to say which platform the engine should run' },
    );
  }
  return tagged;
}

type ResultFn = (source: EnsureSource, found: ImageInspect, extra: Partial<EnsureResult>) =>
  EnsureResult;

/** What was known before every source failed. */
interface Found {
  /** The engine's copy. */
  local: ImageInspect | null;
  /** A registry said which digest the tag names now. */
  tagResolved: boolean;
}

/**
 * Neither the mirror nor the origin gave the image. With `--allow-stale`, the local copy is
 * accepted and the result says so; a tag the origin says does not exist never is.
 */
function staleOrThrow(
  image: ImageRef,
  { local, tagResolved }: Found,
  sources: Source[],
  failures: SourceFailure[],
  options: EnsureOptions,
  result: ResultFn,
): EnsureResult {
  const last = failures.at(-1)?.error ?? new WharfError('WHARF_INTERNAL', 'no source was tried');
  const originSaidNo = failures.some(
    (f) => f.source.kind === 'origin' && f.error.code === 'WHARF_MANIFEST_UNKNOWN',
  );
  if (options.allowStale && local && !originSaidNo) {
    // What is on the engine, not what the tag names now: the tag may have resolved to a new
    // digest that neither source could then deliver.
    return result('stale-local', local, {
      digest: localDigest(local, sources),
      stale: { code: last.code, message: last.message },
    });
  }

  const name = formatImageRef(image);
  const each = failures.map((f) => `${f.source.kind} ${f.phase}: ${f.error.message}`).join('; ');
  const hint = originSaidNo
    ? last.hint
    : local && !options.allowStale
      ? localCopyHint(tagResolved)
      : last.hint;
  throw new WharfError(last.code, `could not make ${name} present (${each})`, {
    hint,
    cause: last,
    detail: { image: name, sources: failures.map((f) => f.source.kind) },
  });
}

/**
 * Offers the copy on the engine without calling it older: its age is not known, only whether
 * a registry said what the tag names now before the pulls failed.
 */
function localCopyHint(tagResolved: boolean): string {
  const state = tagResolved
    ? 'the tag names an image that could not be pulled'
    : 'no registry could say whether the tag still names it';
  return `a copy is on the engine, but ${state}; pass --allow-stale to use that copy`;
}
