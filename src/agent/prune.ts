import { statfs } from 'node:fs/promises';
import type { ContainerSummary, ImageSummary } from '../engine/types.js';
import { parseImageRef } from '../oci/reference.js';
import type { RemovalReason } from './events.js';
import { upstreamName } from './sources.js';
import type { UsageState } from './usage-state.js';
import type { WarmImage } from './warm-config.js';

/** An image on the engine with the references that matter to pruning. */
export interface EngineImage {
  id: string;
  /** Tags and digest references, as the engine lists them. */
  refs: string[];
  size: number;
  /** Build time, ms since the epoch. */
  created: number;
  /** A container uses it, running or not: the engine would refuse to remove it. */
  used: boolean;
}

export interface Removal {
  id: string;
  /** The references to delete; the engine deletes the image with its last one. Empty: by id. */
  refs: string[];
  /** How reports name it. */
  name: string;
  digest: string;
  /** Bytes freed when it goes, 0 when other references keep it. */
  size: number;
  reason: RemovalReason;
}

export function engineImages(
  images: ImageSummary[],
  containers: ContainerSummary[],
): EngineImage[] {
  const used = new Set(containers.map((c) => c.ImageID));
  return images.map((i): EngineImage => ({
    id: i.Id,
    // Older API versions list untagged images as `<none>:<none>` and `<none>@<none>`.
    refs: [...(i.RepoTags ?? []), ...(i.RepoDigests ?? [])].filter((r) => !r.startsWith('<none>')),
    size: i.Size,
    created: i.Created * 1000,
    used: used.has(i.Id) || i.Containers > 0,
  }));
}

/** `registry/repository` of a reference, or undefined for one wharf cannot read. */
function repoOf(ref: string): string | undefined {
  try {
    const parsed = parseImageRef(ref);
    return `${parsed.registry}/${parsed.repository}`;
  } catch {
    return undefined;
  }
}

/**
 * The repositories of the listed images, each known to the engine under two names: its own
 * and the mirror's (`mirror:5000/registry.example.io/ci/build`), as ensure pulls by the latter.
 */
export class Families {
  private readonly byName = new Map<string, string>();
  /** The listed `registry/repository:tag` references, normalized. */
  private readonly listed = new Set<string>();
  private readonly keep = new Map<string, number>();

  constructor(images: WarmImage[], mirrorHost: string | undefined, defaultKeep?: number) {
    for (const image of images) {
      const family = `${image.ref.registry}/${image.ref.repository}`;
      this.byName.set(family, family);
      if (mirrorHost) {
        const name = upstreamName(image.ref.registry);
        this.byName.set(`${mirrorHost}/${name}/${image.ref.repository}`, family);
      }
      if (image.ref.tag) this.listed.add(`${family}:${image.ref.tag}`);
      const keep = image.keep ?? defaultKeep;
      if (keep !== undefined) this.keep.set(family, Math.max(keep, this.keep.get(family) ?? 0));
    }
  }

  familyOf(ref: string): string | undefined {
    const repo = repoOf(ref);
    return repo === undefined ? undefined : this.byName.get(repo);
  }

  keepOf(family: string): number | undefined {
    return this.keep.get(family);
  }

  /** The image holds a listed tag now: it is what the list asks for. */
  isCurrent(image: EngineImage): boolean {
    return image.refs.some((ref) => {
      if (ref.includes('@')) return false;
      const repo = repoOf(ref);
      const tag = ref.slice(ref.lastIndexOf(':') + 1);
      return repo !== undefined && this.listed.has(`${this.byName.get(repo) ?? repo}:${tag}`);
    });
  }

  familiesOf(image: EngineImage): Set<string> {
    const out = new Set<string>();
    for (const ref of image.refs) {
      const family = this.familyOf(ref);
      if (family) out.add(family);
    }
    return out;
  }
}

function digestOf(image: EngineImage): string {
  const ref = image.refs.find((r) => r.includes('@'));
  return ref ? ref.slice(ref.indexOf('@') + 1) : image.id;
}

function removal(image: EngineImage, refs: string[], reason: RemovalReason): Removal {
  const name = refs[0] ?? image.refs[0] ?? image.id.slice(0, 19);
  const others = image.refs.filter((r) => !refs.includes(r));
  return {
    id: image.id,
    refs,
    name: name.includes('@') ? name.slice(0, name.indexOf('@')) : name,
    digest: digestOf(image),
    size: others.length === 0 ? image.size : 0,
    reason,
  };
}

/** Newest first: when wharf pulled it, else when it was built. */
function byNewest(state: UsageState) {
  const time = (i: EngineImage) => state.get(i.id)?.pulledAt ?? i.created;
  return (a: EngineImage, b: EngineImage) => time(b) - time(a);
}

/**
 * Versions beyond `keep` per listed repository, oldest last. The versions the list's tags
 * point at now always stay, whatever `keep` says.
 */
export function oldVersions(
  images: EngineImage[],
  families: Families,
  state: UsageState,
  keepOverride?: number,
): Removal[] {
  const out: Removal[] = [];
  const byFamily = new Map<string, EngineImage[]>();
  for (const image of images) {
    for (const family of families.familiesOf(image)) {
      byFamily.set(family, [...(byFamily.get(family) ?? []), image]);
    }
  }
  for (const [family, members] of byFamily) {
    const keep = keepOverride ?? families.keepOf(family);
    if (keep === undefined) continue;
    const current = members.filter((i) => families.isCurrent(i));
    const older = members.filter((i) => !families.isCurrent(i) && !i.used).sort(byNewest(state));
    for (const image of older.slice(Math.max(0, keep - current.length))) {
      const refs = image.refs.filter((r) => families.familyOf(r) === family);
      out.push(removal(image, refs, 'keep'));
    }
  }
  return out;
}

/** Images of no listed repository that nothing used for `afterMs`, least recently used first. */
export function unusedImages(
  images: EngineImage[],
  families: Families,
  state: UsageState,
  afterMs: number,
  now = Date.now(),
): Removal[] {
  return images
    .filter((i) => !i.used && families.familiesOf(i).size === 0)
    .filter((i) => now - state.lastWanted(i.id) >= afterMs)
    .sort((a, b) => state.lastWanted(a.id) - state.lastWanted(b.id))
    .map((i) => removal(i, i.refs, 'unused'));
}

/**
 * What may go when the disk is below its floor, in the order to remove it: untagged images,
 * then old versions of listed repositories, then unlisted images least recently used first.
 * Current versions and images in use never.
 */
export function diskFloorCandidates(
  images: EngineImage[],
  families: Families,
  state: UsageState,
): Removal[] {
  const dangling = images
    .filter((i) => !i.used && i.refs.length === 0)
    .map((i) => removal(i, [], 'disk-floor'));
  const old = oldVersions(images, families, state, 0).reverse()
    .map((r) => ({ ...r, reason: 'disk-floor' as const }));
  const unlisted = unusedImages(images.filter((i) => i.refs.length > 0), families, state, 0)
    .map((r) => ({ ...r, reason: 'disk-floor' as const }));
  const seen = new Set<string>();
  return [...dangling, ...old, ...unlisted].filter((r) => !seen.has(r.id) && seen.add(r.id));
}

/** Free bytes on the file system holding `path`, or undefined when it cannot be read here. */
export async function freeBytes(path: string): Promise<number | undefined> {
  try {
    const s = await statfs(path);
    return s.bavail * s.bsize;
  } catch {
    return undefined;
  }
}
