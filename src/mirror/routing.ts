import { WharfError } from '../errors.js';
import { parseDigest } from '../oci/digest.js';
import {
  checkRepository, parseImageRef, parseManifestRef, type ManifestRef,
} from '../oci/reference.js';
import type { UpstreamConfig } from './config.js';

export type Route =
  | { kind: 'base' }
  | { kind: 'manifest'; upstream: UpstreamConfig; repo: string; ref: ManifestRef }
  | { kind: 'blob'; upstream: UpstreamConfig; repo: string; digest: string }
  /** `path` is the repository as the client named it, upstream prefix included. */
  | { kind: 'tags'; upstream: UpstreamConfig; repo: string; path: string }
  | { kind: 'push' }
  | { kind: 'other' };

const API = /^\/v2\/(.+)\/(manifests|blobs)\/([^/]+)$/;
const TAGS = /^\/v2\/(.+)\/tags\/list$/;
const UPLOAD = /^\/v2\/.+\/blobs\/uploads(?:\/.*)?$/;

/**
 * Resolves request paths to an upstream and repository, in DESIGN.md's order: a NAME as the
 * first path component, then `?ns=`, then the default upstream. Nothing here ever yields an
 * upstream that is not configured.
 */
export class Router {
  private readonly byName = new Map<string, UpstreamConfig>();
  private readonly byHost = new Map<string, UpstreamConfig>();
  private readonly fallback: UpstreamConfig | undefined;

  constructor(upstreams: UpstreamConfig[]) {
    for (const u of upstreams) {
      this.byName.set(u.name, u);
      const url = new URL(u.url);
      this.byHost.set(url.host, u);
    }
    this.fallback = upstreams.find((u) => u.default) ?? this.byName.get('docker.io');
  }

  resolve(pathname: string, ns: string | null): Route {
    if (pathname === '/v2/' || pathname === '/v2') return { kind: 'base' };
    if (UPLOAD.test(pathname)) return { kind: 'push' };
    const tags = TAGS.exec(pathname);
    if (tags) {
      const { upstream, repo } = this.pick(tags[1]!, ns);
      return { kind: 'tags', upstream, repo: normalise(upstream, checkRepository(repo)), path: tags[1]! };
    }
    const m = API.exec(pathname);
    if (!m) return { kind: 'other' };
    const [, path, what, ref] = m as unknown as [string, string, string, string];

    const { upstream, repo } = this.pick(path, ns);
    const repository = normalise(upstream, checkRepository(repo));
    if (what === 'manifests') {
      return { kind: 'manifest', upstream, repo: repository, ref: parseManifestRef(ref) };
    }
    return { kind: 'blob', upstream, repo: repository, digest: parseDigest(ref).value };
  }

  /**
   * Resolves an image as users write it (`registry.example.io/ci/build:v1`, or with an
   * upstream NAME as its registry) to a configured upstream, for pins.
   */
  forImage(image: string): { upstream: UpstreamConfig; repo: string; ref: ManifestRef } {
    // An upstream NAME written as the registry ("corp/ci/build:v1") wins over host parsing.
    const first = image.slice(0, Math.max(0, image.indexOf('/')));
    const named = this.byName.get(first);
    const ref = named
      ? { ...parseImageRef(`wharf.invalid/${image.slice(first.length + 1)}`), registry: first }
      : parseImageRef(image);
    const upstream =
      this.byName.get(ref.registry) ??
      this.byHost.get(ref.registry) ??
      nsAlias(ref.registry, this.byName);
    if (!upstream) {
      throw new WharfError('WHARF_UPSTREAM_UNKNOWN', `registry ${ref.registry} of ${image} is not an upstream of this mirror`, {
        hint: 'add the registry to the upstreams, or name the image by an upstream NAME',
      });
    }
    let repo = ref.repository;
    // parseImageRef adds Docker Hub's library/ only for docker.io itself.
    if (ref.registry !== 'docker.io') repo = normalise(upstream, repo);
    const manifestRef: ManifestRef = ref.digest
      ? { kind: 'digest', digest: ref.digest }
      : { kind: 'tag', tag: ref.tag ?? 'latest' };
    return { upstream, repo, ref: manifestRef };
  }

  private pick(path: string, ns: string | null): { upstream: UpstreamConfig; repo: string } {
    const slash = path.indexOf('/');
    const first = slash > 0 ? path.slice(0, slash) : undefined;
    const named = first === undefined ? undefined : this.byName.get(first);
    if (named) return { upstream: named, repo: path.slice(slash + 1) };

    if (ns !== null) {
      const upstream = this.byName.get(ns) ?? this.byHost.get(ns) ?? nsAlias(ns, this.byName);
      if (!upstream) {
        throw new WharfError('WHARF_UPSTREAM_UNKNOWN', `registry ${JSON.stringify(ns)} is not an upstream of this mirror`, {
          hint: 'add it to the mirror\'s upstreams, or pull it from its registry directly',
        });
      }
      return { upstream, repo: path };
    }
    if (!this.fallback) {
      throw new WharfError('WHARF_UPSTREAM_UNKNOWN', `no upstream named in ${JSON.stringify(path)} and no default upstream`, {
        hint: 'prefix the repository with an upstream name, or mark one upstream default: true',
      });
    }
    return { upstream: this.fallback, repo: path };
  }
}

// containerd sends Docker Hub as ns=docker.io, but older tools use its API host.
function nsAlias(ns: string, byName: Map<string, UpstreamConfig>): UpstreamConfig | undefined {
  if (ns === 'registry-1.docker.io' || ns === 'index.docker.io') return byName.get('docker.io');
  return undefined;
}

/** Docker Hub keeps official images under `library/`; clients may leave it out. */
function normalise(upstream: UpstreamConfig, repo: string): string {
  const hub = upstream.name === 'docker.io' || new URL(upstream.url).host === 'registry-1.docker.io';
  if (hub && !repo.includes('/')) return `library/${repo}`;
  return repo;
}
