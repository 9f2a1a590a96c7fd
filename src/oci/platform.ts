import { WharfError } from '../errors.js';
import type { Descriptor, ImageIndex } from './manifest.js';

/** A platform as users write it and as wharf matches it against an index's entries. */
export interface PlatformSpec {
  os: string;
  architecture: string;
  variant?: string;
  /** Windows only: `10.0.20348` (a build) or `10.0.20348.2113` (a build and its revision). */
  osVersion?: string;
}

const ARCH_ALIASES: Record<string, string> = {
  x86_64: 'amd64',
  x86: '386',
  i386: '386',
  aarch64: 'arm64',
  armhf: 'arm',
  armel: 'arm',
};

export function normalizeArchitecture(arch: string): string {
  const lower = arch.toLowerCase();
  return ARCH_ALIASES[lower] ?? lower;
}

const PLATFORM_SHAPE = /^([a-z0-9]+)(?:\(([0-9.]+)\))?\/([a-z0-9_]+)(?:\/([a-z0-9]+))?$/;

/**
 * Parses `os/arch[/variant]`, and `os(os.version)/arch` for Windows builds: the notation
 * containerd uses when it prints a platform with an os.version.
 */
export function parsePlatform(input: string, option = '--platform'): PlatformSpec {
  const match = PLATFORM_SHAPE.exec(input.trim().toLowerCase());
  if (!match) {
    const what = `${option}: invalid platform ${JSON.stringify(input)}`;
    throw new WharfError('WHARF_BAD_USAGE', what, {
      hint: 'write a platform as os/arch[/variant], e.g. linux/arm64/v8, or with a Windows ' +
        'build as windows(10.0.20348)/amd64',
    });
  }
  const [, os, osVersion, arch, variant] = match;
  if (osVersion !== undefined && !parseWindowsVersion(osVersion)) {
    throw new WharfError('WHARF_BAD_USAGE', `${option}: invalid os.version ${osVersion}`, {
      hint: 'a Windows os.version has three or four parts: 10.0.20348 or 10.0.20348.2113',
    });
  }
  const spec: PlatformSpec = { os: os!, architecture: normalizeArchitecture(arch!) };
  if (variant) spec.variant = variant;
  if (osVersion) spec.osVersion = osVersion;
  return spec;
}

export function formatPlatform(p: PlatformSpec): string {
  const os = p.osVersion ? `${p.os}(${p.osVersion})` : p.os;
  return [os, p.architecture, p.variant].filter(Boolean).join('/');
}

/** The platform of an index entry, in the same shape as a user's. */
export function platformOf(d: Descriptor): PlatformSpec | undefined {
  if (!d.platform) return undefined;
  const spec: PlatformSpec = {
    os: d.platform.os.toLowerCase(),
    architecture: normalizeArchitecture(d.platform.architecture),
  };
  if (d.platform.variant) spec.variant = d.platform.variant;
  if (d.platform['os.version']) spec.osVersion = d.platform['os.version'];
  return spec;
}

export interface WindowsVersion {
  major: number;
  minor: number;
  build: number;
  /** The update build revision (UBR); undefined when the version names a build only. */
  revision: number | undefined;
}

export function parseWindowsVersion(text: string): WindowsVersion | undefined {
  const m = /^(\d+)\.(\d+)\.(\d+)(?:\.(\d+))?$/.exec(text.trim());
  if (!m) return undefined;
  return {
    major: Number(m[1]),
    minor: Number(m[2]),
    build: Number(m[3]),
    revision: m[4] === undefined ? undefined : Number(m[4]),
  };
}

function sameBuild(a: WindowsVersion, b: WindowsVersion): boolean {
  return a.major === b.major && a.minor === b.minor && a.build === b.build;
}

/** What the engine says about its host, as far as platform choice needs it. */
export interface EngineHostInfo {
  OSType?: string;
  Architecture?: string;
  OSVersion?: string;
  KernelVersion?: string;
  OperatingSystem?: string;
}

/**
 * The Windows build an engine runs on, `10.0.20348`, from `/info`. Daemons report it in
 * `OSVersion` (`10.0.20348`), older ones only in `KernelVersion` (`10.0 20348 (20348.1...)`)
 * or in the `OperatingSystem` text (`... (OS Build 20348.2113)`).
 */
export function windowsBuildOfEngine(info: EngineHostInfo): string | undefined {
  const dotted = /(\d+)\.(\d+)\.(\d+)/.exec(info.OSVersion ?? '');
  if (dotted) return `${dotted[1]}.${dotted[2]}.${dotted[3]}`;
  const kernel = /^(\d+)\.(\d+) (\d+)/.exec(info.KernelVersion ?? '');
  if (kernel) return `${kernel[1]}.${kernel[2]}.${kernel[3]}`;
  const build = /OS Build (\d+)/.exec(info.OperatingSystem ?? '');
  if (build) return `10.0.${build[1]}`;
  return undefined;
}

export interface PlatformWanted {
  /** The platform of the engine's host; `osVersion` is its Windows build. */
  host: PlatformSpec;
  /** `--platform`, overriding the host's os, architecture, variant or build. */
  requested?: PlatformSpec;
}

// Attestation manifests (BuildKit provenance, SBOMs) sit in indexes as unknown/unknown entries.
function isAttestation(d: Descriptor): boolean {
  return d.annotations?.['vnd.docker.reference.type'] === 'attestation-manifest';
}

function variantMatches(entry: PlatformSpec, want: PlatformSpec): boolean {
  if (!want.variant || !entry.variant) return true;
  const norm = (v: string) => (want.architecture === 'arm64' && v === 'v8' ? '' : v);
  return norm(entry.variant) === norm(want.variant);
}

function describe(entries: Descriptor[]): string {
  const names = entries.map((d) => platformOf(d)).filter((p) => p !== undefined);
  return names.length > 0 ? names.map(formatPlatform).join(', ') : 'no platform entries';
}

/**
 * Chooses the entry of an index the engine should run.
 *
 * For Windows it takes what the Docker daemon takes: entries built for the host's build or
 * an older one (the daemon refuses only newer builds), and entries without an os.version.
 * It prefers them in the order they run best: the host's own build (highest revision first),
 * then a build of Windows Server 2022 or later at most the host's (these run under process
 * isolation on newer hosts, as containerd 2 allows), then older builds (Hyper-V isolation
 * only), then entries that name no build. `--platform windows(10.0.17763)/amd64` asks for
 * one build exactly.
 */
export function choosePlatform(index: ImageIndex, wanted: PlatformWanted): Descriptor {
  const want = effectivePlatform(wanted);
  const entries = index.manifests.filter((d) => d.platform && !isAttestation(d));
  const matching = entries.filter((d) => {
    const p = platformOf(d)!;
    return p.os === want.os && p.architecture === want.architecture && variantMatches(p, want);
  });
  if (matching.length === 0) {
    throw new WharfError(
      'WHARF_PLATFORM_UNAVAILABLE',
      `the image has no ${formatPlatform({ ...want, osVersion: undefined })} entry; ` +
        `it has ${describe(entries)}`,
      { hint: 'pass --platform with one of the platforms the image has, if the engine runs it' },
    );
  }
  if (want.os !== 'windows') return preferExactVariant(matching, want);
  const exact = wanted.requested?.osVersion !== undefined;
  return exact ? chooseWindowsBuild(matching, want) : chooseForWindowsHost(matching, want);
}

/** The host's platform with `--platform` laid over it; the host's build only for its own os. */
export function effectivePlatform(wanted: PlatformWanted): PlatformSpec {
  const { host, requested } = wanted;
  if (!requested) return host;
  const want: PlatformSpec = { ...requested };
  if (!want.osVersion && requested.os === host.os && host.osVersion) {
    want.osVersion = host.osVersion;
  }
  return want;
}

function preferExactVariant(matching: Descriptor[], want: PlatformSpec): Descriptor {
  if (want.variant) {
    const exact = matching.find((d) => platformOf(d)!.variant === want.variant);
    if (exact) return exact;
  }
  return matching[0]!;
}

interface Versioned {
  d: Descriptor;
  v: WindowsVersion | undefined;
}

function versionsOf(matching: Descriptor[]): Versioned[] {
  return matching.map((d) => ({ d, v: parseWindowsVersion(platformOf(d)!.osVersion ?? '') }));
}

function newest(candidates: Versioned[]): Descriptor {
  let best = candidates[0]!;
  for (const c of candidates.slice(1)) {
    if (compareVersions(c.v, best.v) > 0) best = c;
  }
  return best.d;
}

/** The first Windows build whose images run on later builds under process isolation. */
const FORWARD_COMPATIBLE_BUILD = 20348;

/** How well an entry runs on the host: 0 best; undefined when the daemon would refuse it. */
function windowsFit(v: WindowsVersion | undefined, host: WindowsVersion): number | undefined {
  if (!v) return 3;
  if (sameBuild(v, host)) return 0;
  if (compareVersions({ ...v, revision: undefined }, host) > 0) return undefined;
  return v.build >= FORWARD_COMPATIBLE_BUILD ? 1 : 2;
}

function chooseForWindowsHost(matching: Descriptor[], want: PlatformSpec): Descriptor {
  const versioned = versionsOf(matching);
  const host = want.osVersion ? parseWindowsVersion(want.osVersion) : undefined;
  // No build to match (an engine that does not say, or a Linux host asked for Windows):
  // the newest entry.
  if (!host) return newest(versioned);

  let bestFit = Infinity;
  let candidates: Versioned[] = [];
  for (const c of versioned) {
    const fit = windowsFit(c.v, host);
    if (fit === undefined || fit > bestFit) continue;
    if (fit < bestFit) candidates = [];
    bestFit = fit;
    candidates.push(c);
  }
  if (candidates.length === 0) throw noWindowsEntry(versioned, want, 'newer than this host');
  return newest(candidates);
}

/** `--platform windows(BUILD)/arch`: that build (and revision, when given) and no other. */
function chooseWindowsBuild(matching: Descriptor[], want: PlatformSpec): Descriptor {
  const versioned = versionsOf(matching);
  const wanted = parseWindowsVersion(want.osVersion!)!;
  const candidates = versioned.filter(({ v }) => v !== undefined && sameBuild(v, wanted) &&
    (wanted.revision === undefined || v.revision === wanted.revision));
  if (candidates.length === 0) throw noWindowsEntry(versioned, want, 'other builds');
  return newest(candidates);
}

function noWindowsEntry(versioned: Versioned[], want: PlatformSpec, why: string): WharfError {
  const builds = versioned.map(({ d }) => platformOf(d)!.osVersion ?? 'no os.version');
  return new WharfError(
    'WHARF_PLATFORM_UNAVAILABLE',
    `the image has no ${want.os}/${want.architecture} entry for build ${want.osVersion}; ` +
      `it has ${why}: ${builds.join(', ')}`,
    {
      hint: 'use a tag built for this Windows build or an older one, or pass --platform ' +
        `'windows(${builds[0]})/${want.architecture}' to name a build the host can run`,
      detail: { available: builds, wanted: want.osVersion },
    },
  );
}

function compareVersions(a: WindowsVersion | undefined, b: WindowsVersion | undefined): number {
  if (!a || !b) return a ? 1 : b ? -1 : 0;
  return (
    a.major - b.major || a.minor - b.minor || a.build - b.build ||
    (a.revision ?? -1) - (b.revision ?? -1)
  );
}
