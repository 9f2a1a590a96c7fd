import { Agent, request, type Dispatcher } from 'undici';
import { WharfError, type ErrorCode } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import { digestOf, parseDigest } from '../oci/digest.js';
import { parseManifest, type ParsedManifest } from '../oci/manifest.js';
import { MANIFEST_ACCEPT } from '../oci/media-types.js';
import { Authenticator } from './auth.js';
import { resolveCredentials, type Credentials } from './credentials.js';

export interface UpstreamTarget {
  name: string;
  /** Base URL, `https://registry.example.io` or `http://127.0.0.1:5001`; no credentials in it. */
  url: string;
  credentials?: Credentials;
}

export interface ClientOptions {
  logger?: Logger;
  /** Connect and response-header timeout, ms. */
  timeoutMs?: number;
  /** Longest silence in a body stream, ms. */
  bodyTimeoutMs?: number;
  dispatcher?: Dispatcher;
}

export interface ManifestHead {
  digest: string;
  mediaType: string;
  size: number;
}

export interface FetchedManifest extends ManifestHead {
  body: Buffer;
  parsed: ParsedManifest;
}

/** One page of a repository's tag list. */
export interface TagPage {
  tags: string[];
  /** The `last` to ask for the next page with, when the upstream said there is one. */
  next?: string;
}

/** Where a tag list is to start, and how long it may be (`?n=` and `?last=`). */
export interface TagQuery {
  n?: number;
  last?: string;
}

export interface BlobResponse {
  body: Dispatcher.ResponseData['body'];
  /** Bytes the upstream announced, when it did. */
  size: number | undefined;
}

/** Larger than any real manifest; keeps a hostile upstream from filling memory. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;
/** Room for some 100,000 tags. */
const MAX_TAG_LIST_BYTES = 8 * 1024 * 1024;
const MAX_REDIRECTS = 5;

/** Maps an upstream's HTTP status onto a wharf error code, for everything but 404. */
function statusCode(status: number): ErrorCode {
  if (status === 401) return 'WHARF_UPSTREAM_UNAUTHORIZED';
  if (status === 403) return 'WHARF_UPSTREAM_DENIED';
  if (status === 429) return 'WHARF_UPSTREAM_TOO_MANY_REQUESTS';
  if (status >= 500) return 'WHARF_UPSTREAM_UNAVAILABLE';
  return 'WHARF_UPSTREAM_PROTOCOL';
}

/** Errors that mean "the upstream could not be asked", as opposed to "it said no". */
export function isUnavailable(err: unknown): boolean {
  return (
    err instanceof WharfError &&
    (err.code === 'WHARF_UPSTREAM_UNAVAILABLE' || err.code === 'WHARF_UPSTREAM_TOO_MANY_REQUESTS')
  );
}

let sharedAgent: Agent | undefined;
function defaultAgent(timeoutMs: number, bodyTimeoutMs: number): Agent {
  sharedAgent ??= new Agent({
    connect: { timeout: timeoutMs },
    headersTimeout: timeoutMs,
    bodyTimeout: bodyTimeoutMs,
    connections: 32,
  });
  return sharedAgent;
}

/** A registry client for one upstream: the pull half of the distribution API, with auth. */
export class RegistryClient {
  readonly name: string;
  readonly base: URL;
  private readonly logger: Logger;
  private readonly dispatcher: Dispatcher;
  private readonly auth: Authenticator;
  private credentialsPromise: Promise<Credentials | undefined> | undefined;

  constructor(upstream: UpstreamTarget, options: ClientOptions = {}) {
    this.name = upstream.name;
    this.base = new URL(upstream.url.replace(/\/+$/, '') + '/');
    this.logger = options.logger ?? silentLogger();
    this.dispatcher =
      options.dispatcher ?? defaultAgent(options.timeoutMs ?? 15_000, options.bodyTimeoutMs ?? 60_000);
    const configured = upstream.credentials;
    const credentials = () =>
      (this.credentialsPromise ??= resolveCredentials(this.name, this.base.host, configured));
    this.auth = new Authenticator(this.name, credentials, this.dispatcher, this.logger);
  }

  async headManifest(repo: string, ref: string): Promise<ManifestHead | null> {
    const res = await this.send('HEAD', repo, `manifests/${ref}`, { accept: MANIFEST_ACCEPT });
    await res.body.dump();
    if (res.statusCode === 404) return null;
    this.check(res, repo, `manifest ${ref}`);
    const digest = header(res, 'docker-content-digest');
    if (!digest) {
      throw new WharfError('WHARF_UPSTREAM_PROTOCOL', `upstream ${this.name} sent no digest for ${repo}:${ref}`);
    }
    return {
      digest: parseDigest(digest).value,
      mediaType: header(res, 'content-type') ?? '',
      size: Number(header(res, 'content-length') ?? 0),
    };
  }

  /**
   * Fetches a manifest and verifies it: by digest, the bytes must hash to it; by tag, they must
   * hash to the digest the upstream claims, when it claims one.
   */
  async getManifest(repo: string, ref: string): Promise<FetchedManifest | null> {
    const res = await this.send('GET', repo, `manifests/${ref}`, { accept: MANIFEST_ACCEPT });
    if (res.statusCode === 404) {
      await res.body.dump();
      return null;
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      this.check(res, repo, `manifest ${ref}`);
    }
    const announced = Number(header(res, 'content-length') ?? 0);
    if (announced > MAX_MANIFEST_BYTES) {
      await res.body.dump();
      throw new WharfError('WHARF_MANIFEST_TOO_LARGE', `manifest ${repo}:${ref} is ${announced} bytes`);
    }
    const body = await readLimited(res.body, MAX_MANIFEST_BYTES, `manifest ${repo}:${ref}`);

    const expected = ref.includes(':') ? ref : header(res, 'docker-content-digest');
    const algorithm = expected ? parseDigest(expected).algorithm : 'sha256';
    const digest = digestOf(body, algorithm);
    if (expected && digest !== expected) {
      throw new WharfError(
        'WHARF_UPSTREAM_DIGEST_MISMATCH',
        `upstream ${this.name} sent a manifest for ${repo}:${ref} that hashes to ${digest}, ` +
          `not ${expected}`,
        { hint: 'the upstream or something between it and the mirror altered the manifest' },
      );
    }
    const contentType = header(res, 'content-type');
    const parsed = parseManifest(body, contentType);
    return {
      body,
      digest: ref.includes(':') ? ref : digestOf(body, 'sha256'),
      mediaType: parsed.mediaType,
      size: body.length,
      parsed,
    };
  }

  /** One page of the repository's tags, or null when the upstream does not know it. */
  async listTags(repo: string, query: TagQuery = {}): Promise<TagPage | null> {
    const params = new URLSearchParams();
    if (query.n !== undefined) params.set('n', String(query.n));
    if (query.last !== undefined) params.set('last', query.last);
    const search = params.size > 0 ? `?${params}` : '';
    const res = await this.send('GET', repo, `tags/list${search}`, { accept: 'application/json' });
    if (res.statusCode === 404) {
      await res.body.dump();
      return null;
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      this.check(res, repo, 'tag list');
    }
    const body = await readLimited(res.body, MAX_TAG_LIST_BYTES, `tag list of ${repo}`, 'WHARF_UPSTREAM_PROTOCOL');
    let tags: unknown;
    try {
      tags = (JSON.parse(body.toString('utf8')) as { tags?: unknown }).tags;
    } catch {
      tags = undefined;
    }
    // A repository without tags may come back as `"tags": null`.
    if (tags === null) tags = [];
    if (!Array.isArray(tags) || !tags.every((t) => typeof t === 'string')) {
      throw new WharfError('WHARF_UPSTREAM_PROTOCOL', `upstream ${this.name} sent a malformed tag list for ${repo}`);
    }
    return { tags, next: nextLast(header(res, 'link')) };
  }

  /**
   * HEAD of a blob in a repository: its size (undefined when the upstream did not say), or null
   * when the repository does not have it.
   */
  async headBlob(repo: string, digest: string): Promise<{ size: number | undefined } | null> {
    const res = await this.send('HEAD', repo, `blobs/${digest}`, { follow: true });
    await res.body.dump();
    if (res.statusCode === 404) return null;
    this.check(res, repo, `blob ${digest}`);
    const length = header(res, 'content-length');
    return { size: length === undefined ? undefined : Number(length) };
  }

  async getBlob(repo: string, digest: string, signal?: AbortSignal): Promise<BlobResponse | null> {
    const res = await this.send('GET', repo, `blobs/${digest}`, { follow: true, signal });
    if (res.statusCode === 404) {
      await res.body.dump();
      return null;
    }
    if (res.statusCode !== 200) {
      await res.body.dump();
      this.check(res, repo, `blob ${digest}`);
    }
    const length = header(res, 'content-length');
    return { body: res.body, size: length === undefined ? undefined : Number(length) };
  }

  private check(res: Dispatcher.ResponseData, repo: string, what: string): void {
    if (res.statusCode >= 200 && res.statusCode < 300) return;
    const code = statusCode(res.statusCode);
    const refused = code === 'WHARF_UPSTREAM_UNAUTHORIZED' || code === 'WHARF_UPSTREAM_DENIED';
    const hint = refused && this.auth.refusedCredentials
      ? `check the username and password configured for upstream ${this.name}, and that the ` +
        `account may pull ${repo}`
      : refused
        ? `configure credentials for upstream ${this.name} that may pull ${repo}`
        : code === 'WHARF_UPSTREAM_TOO_MANY_REQUESTS'
          ? 'the upstream rate-limits this mirror; authenticate or wait'
          : undefined;
    throw new WharfError(code, `upstream ${this.name} answered ${res.statusCode} for ${what} of ${repo}`, {
      hint,
      detail: { upstream: this.name, status: res.statusCode },
    });
  }

  /**
   * Sends a request under `/v2/<repo>/`, answering auth challenges, and following redirects to
   * blob storage without the upstream's credentials: those belong to the registry alone.
   */
  private async send(
    method: 'GET' | 'HEAD',
    repo: string,
    path: string,
    opts: { accept?: string; follow?: boolean; signal?: AbortSignal },
  ): Promise<Dispatcher.ResponseData> {
    const scope = `repository:${repo}:pull`;
    const url = new URL(`v2/${repo}/${path}`, this.base);
    const headers: Record<string, string> = {};
    if (opts.accept) headers.accept = opts.accept;
    let authorization = await this.auth.headerFor(scope);

    let res = await this.raw(method, url, { ...headers, ...auth(authorization) }, opts.signal);
    for (let attempt = 0; res.statusCode === 401 && attempt < 2; attempt++) {
      const retry = await this.auth.answer(header(res, 'www-authenticate'), scope, authorization);
      if (!retry) break;
      await res.body.dump();
      authorization = retry;
      res = await this.raw(method, url, { ...headers, ...auth(authorization) }, opts.signal);
    }

    let location = header(res, 'location');
    for (let hop = 0; opts.follow && isRedirect(res.statusCode) && location; hop++) {
      if (hop >= MAX_REDIRECTS) {
        throw new WharfError('WHARF_UPSTREAM_PROTOCOL', `upstream ${this.name} redirected too often`);
      }
      await res.body.dump();
      const next: URL = new URL(location, url);
      const sameOrigin = next.origin === this.base.origin;
      res = await this.raw(method, next, sameOrigin ? { ...auth(authorization) } : {}, opts.signal);
      location = header(res, 'location');
    }
    return res;
  }

  private async raw(
    method: 'GET' | 'HEAD',
    url: URL,
    headers: Record<string, string>,
    signal?: AbortSignal,
  ): Promise<Dispatcher.ResponseData> {
    try {
      return await request(url, { method, headers, signal, dispatcher: this.dispatcher });
    } catch (err) {
      if (signal?.aborted) throw err;
      // The URL is built from checked names and a configured base without credentials, so it
      // is safe in a message.
      throw new WharfError(
        'WHARF_UPSTREAM_UNAVAILABLE',
        `upstream ${this.name} is unreachable (${url.host}): ${(err as Error).message}`,
        { cause: err, detail: { upstream: this.name } },
      );
    }
  }
}

function auth(value: string | undefined): Record<string, string> {
  return value ? { authorization: value } : {};
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

export function header(res: Dispatcher.ResponseData, name: string): string | undefined {
  const value = res.headers[name];
  return Array.isArray(value) ? value[0] : value;
}

async function readLimited(
  body: Dispatcher.ResponseData['body'],
  limit: number,
  what: string,
  code: ErrorCode = 'WHARF_MANIFEST_TOO_LARGE',
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of body) {
      size += (chunk as Buffer).length;
      if (size > limit) {
        body.destroy();
        throw new WharfError(code, `${what} is larger than ${limit} bytes`);
      }
      chunks.push(chunk as Buffer);
    }
  } catch (err) {
    if (err instanceof WharfError) throw err;
    // A body that times out or breaks off is the upstream being unavailable, like a refused
    // connection: a cached tag is served stale rather than the client getting a 500.
    throw new WharfError('WHARF_UPSTREAM_UNAVAILABLE', `${what} broke off: ${(err as Error).message}`,
      { cause: err });
  }
  return Buffer.concat(chunks);
}

/** The `last` parameter of a `Link: <...>; rel="next"` header (RFC 8288), if there is one. */
function nextLast(link: string | undefined): string | undefined {
  const m = link && /<([^>]*)>\s*;\s*rel="?next"?/i.exec(link);
  if (!m) return undefined;
  const last = new URL(m[1]!, 'http://link.invalid/').searchParams.get('last');
  return last ?? undefined;
}
