import { WharfError } from '../errors.js';
import { parseDigest } from '../oci/digest.js';
import {
  checkRepository, parseImageRef, parseManifestRef, parseNamedImageRef, type ManifestRef,
} from '../oci/reference.js';
import { defaultName, type UpstreamConfig } from './config.js';

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
 * Resolves request paths to an upstream and repository, in DESIGN.md's order: a NAME (or the
 * upstream's host as its default NAME) as the first path component, then `?ns=`, then the
 * default upstream. Nothing here ever yields an
 * upstream that is not configured.
 */
export class Router {
  private readonly byName = new Map<string, UpstreamConfig>();
  /**
   * NAMEs first, then each upstream's host written as its default NAME would be, and docker.io
   * for Docker Hub: an upstream given a NAME of its own is still found by the name `wharf
   * ensure` and `wharf warm` derive from an image's registry.
   */
  private readonly byPathName = new Map<string, UpstreamConfig>();
  private readonly byHost = new Map<string, UpstreamConfig>();
  /** The upstream that is Docker Hub, whatever its NAME: clients address it as docker.io. */
  private readonly hub: UpstreamConfig | undefined;
  private readonly fallback: UpstreamConfig | undefined;

  constructor(upstreams: UpstreamConfig[]) {
    for (const u of upstreams) {
      this.byName.set(u.name, u);
      this.byHost.set(new URL(u.url).host, u);
    }
    // URL.host drops a default port, but containerd may send it (`?ns=host:443`). An upstream
    // whose URL names that port explicitly keeps the key.
    for (const u of upstreams) {
      const url = new URL(u.url);
      if (url.port !== '') continue;
      const key = `${url.host}:${url.protocol === 'https:' ? 443 : 80}`;
      if (!this.byHost.has(key)) this.byHost.set(key, u);
    }
    this.hub = this.byName.get('docker.io') ?? upstreams.find(isHub);
    this.fallback = upstreams.find((u) => u.default) ?? this.hub;

    for (const [name, u] of this.byName) this.byPathName.set(name, u);
    for (const u of upstreams) {
      const alias = defaultName(new URL(u.url));
      if (!this.byPathName.has(alias)) this.byPathName.set(alias, u);
    }
    if (this.hub && !this.byPathName.has('docker.io')) this.byPathName.set('docker.io', this.hub);
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
    const named = this.byPathName.get(first);
    const ref = named ? parseNamedImageRef(image, first) : parseImageRef(image);
    const upstream = named ?? this.byRegistry(ref.registry);
    if (!upstream) {
      throw new WharfError('WHARF_UPSTREAM_UNKNOWN', `registry ${ref.registry} of ${image} is not an upstream of this mirror`, {
        hint: 'add the registry to the upstreams, or name the image by an upstream NAME',
      });
    }
    let repo = ref.repository;
    // parseImageRef adds Docker Hub's library/ only for docker.io itself, and not when the
    // image was named by a NAME, which it never saw.
    if (named || ref.registry !== 'docker.io') repo = normalise(upstream, repo);
    const manifestRef: ManifestRef = ref.digest
      ? { kind: 'digest', digest: ref.digest }
      : { kind: 'tag', tag: ref.tag ?? 'latest' };
    return { upstream, repo, ref: manifestRef };
  }

  /**
   * The upstream a registry host names (`?ns=`, or an image's registry): by NAME, by URL host
   * and port, else Docker Hub by any of its hosts. containerd sends Docker Hub as docker.io,
   * older tools its API host.
   */
  private byRegistry(host: string): UpstreamConfig | undefined {
    const named = this.byName.get(host) ?? this.byHost.get(host);
    if (named) return named;
    return HUB_HOSTS.has(host.replace(/:443$/, '')) ? this.hub : undefined;
  }

  private pick(path: string, ns: string | null): { upstream: UpstreamConfig; repo: string } {
    const slash = path.indexOf('/');
    const first = slash > 0 ? path.slice(0, slash) : undefined;
    const named = first === undefined ? undefined : this.byPathName.get(first);
    if (named) return { upstream: named, repo: path.slice(slash + 1) };

    if (ns !== null) {
      const upstream = this.byRegistry(ns);
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

/** The hosts Docker Hub is known by: its image-name host and its API hosts. */
const HUB_HOSTS = new Set(['docker.io', 'registry-1.docker.io', 'index.docker.io']);

function isHub(upstream: UpstreamConfig): boolean {
  return upstream.name === 'docker.io' || HUB_HOSTS.has(new URL(upstream.url).host);
}

/** Docker Hub keeps official images under `library/`; clients may leave it out. */
function normalise(upstream: UpstreamConfig, repo: string): string {
  if (isHub(upstream) && !repo.includes('/')) return `library/${repo}`;
  return repo;
}
