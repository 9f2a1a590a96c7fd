import { readFileSync } from 'node:fs';
import { Agent, request, type Dispatcher } from 'undici';
import { WharfError, isWharfError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { EngineAddress, EngineTls } from './address.js';
import { PullStream } from './pull-stream.js';
import type {
  ContainerSummary,
  Engine,
  EngineInfo,
  EngineVersion,
  ImageInspect,
  ImageSummary,
  PullOptions,
  PullResult,
} from './types.js';

/**
 * The newest API wharf was written against; newer engines are asked to speak this one, unless
 * they no longer accept it (Docker 29 refuses anything below 1.44): then their oldest.
 */
export const MAX_API_VERSION = '1.43';
/** The oldest that has what wharf uses (the `platform` parameter of a pull came in 1.32). */
export const MIN_API_VERSION = '1.32';

const REQUEST_TIMEOUT_MS = 30_000;

/**
 * How much longer than `stallMs` a pull may be silent once every layer is downloaded. The
 * engine sends nothing while it extracts and registers a layer: on Windows a base layer of
 * several GB takes minutes, and cutting it there would throw away a finished download.
 */
export const EXTRACT_STALL_FACTOR = 10;

export function compareApiVersions(a: string, b: string): number {
  const [am = 0, an = 0] = a.split('.').map(Number);
  const [bm = 0, bn = 0] = b.split('.').map(Number);
  return am - bm || an - bn;
}

export interface EngineClientOptions {
  logger?: Logger;
  /** Connect and response-header timeout for everything but the pull stream, ms. */
  timeoutMs?: number;
}

type Method = 'GET' | 'POST' | 'DELETE' | 'HEAD';

/** A Docker Engine API client over a unix socket, a named pipe or plain TCP. */
export class DockerEngine implements Engine {
  readonly address: string;
  private readonly origin: string;
  private readonly dispatcher: Agent;
  private readonly tls: boolean;
  private readonly logger: Logger;
  private readonly timeoutMs: number;
  private apiVersion: Promise<string> | undefined;

  constructor(address: EngineAddress, options: EngineClientOptions = {}) {
    this.address = address.text;
    this.logger = options.logger ?? silentLogger();
    this.timeoutMs = options.timeoutMs ?? REQUEST_TIMEOUT_MS;
    this.tls = address.kind === 'tcp' && address.tls !== undefined;
    if (address.kind === 'tcp') {
      this.origin = address.origin;
      this.dispatcher = new Agent({ connect: { timeout: this.timeoutMs, ...tlsOptions(address.tls) } });
    } else {
      // The host part is ignored on a socket or pipe, but HTTP/1.1 needs one.
      this.origin = 'http://docker';
      this.dispatcher = new Agent({
        connect: { socketPath: address.socketPath, timeout: this.timeoutMs },
      });
    }
  }

  /**
   * The API version to speak: the engine's own, capped at what wharf knows, but never below
   * the oldest the engine accepts. Asked once, with the unversioned `/_ping` that every engine
   * answers; an engine newer than wharf is also asked its minimum (unversioned `/version`).
   */
  negotiate(): Promise<string> {
    this.apiVersion ??= (async () => {
      const res = await this.send('GET', '/_ping', { versioned: false });
      await res.body.dump();
      await this.check(res, 'GET /_ping');
      const header = res.headers['api-version'];
      const offered = (Array.isArray(header) ? header[0] : header) ?? MIN_API_VERSION;
      if (compareApiVersions(offered, MIN_API_VERSION) < 0) {
        throw new WharfError(
          'WHARF_ENGINE_ERROR',
          `the engine at ${this.address} speaks API ${offered}, older than ${MIN_API_VERSION}`,
          { hint: 'upgrade the container engine (Docker 17.09 or newer)' },
        );
      }
      let chosen = offered;
      if (compareApiVersions(offered, MAX_API_VERSION) > 0) {
        const minimum = await this.minimumApiVersion();
        chosen = compareApiVersions(minimum, MAX_API_VERSION) > 0 ? minimum : MAX_API_VERSION;
      }
      this.logger.debug({ engine: this.address, api: chosen }, 'engine api negotiated');
      return chosen;
    })();
    this.apiVersion.catch(() => (this.apiVersion = undefined));
    return this.apiVersion;
  }

  /** The oldest API the engine accepts; engines that do not say are taken to accept any. */
  private async minimumApiVersion(): Promise<string> {
    const res = await this.send('GET', '/version', { versioned: false });
    await this.check(res, 'GET /version');
    const body = (await res.body.json()) as Partial<EngineVersion>;
    return body.MinAPIVersion ?? MIN_API_VERSION;
  }

  async info(): Promise<EngineInfo> {
    return this.json<EngineInfo>('GET', '/info');
  }

  async version(): Promise<EngineVersion> {
    return this.json<EngineVersion>('GET', '/version');
  }

  async inspectImage(name: string): Promise<ImageInspect | null> {
    const res = await this.send('GET', `/images/${name}/json`);
    if (res.statusCode === 404) {
      await res.body.dump();
      return null;
    }
    await this.check(res, `inspect of image ${name}`);
    return (await res.body.json()) as ImageInspect;
  }

  async listImages(): Promise<ImageSummary[]> {
    return this.json<ImageSummary[]>('GET', '/images/json');
  }

  async listContainers(): Promise<ContainerSummary[]> {
    return this.json<ContainerSummary[]>('GET', '/containers/json?all=1');
  }

  async tag(source: string, repo: string, tag: string): Promise<void> {
    const query = new URLSearchParams({ repo, tag });
    const res = await this.send('POST', `/images/${source}/tag?${query}`);
    await this.check(res, `tag of ${source} as ${repo}:${tag}`);
    await res.body.dump();
  }

  async removeImage(name: string): Promise<boolean> {
    const res = await this.send('DELETE', `/images/${name}`);
    if (res.statusCode === 404) {
      await res.body.dump();
      return false;
    }
    await this.check(res, `removal of image ${name}`);
    await res.body.dump();
    return true;
  }

  /**
   * Pulls an image and follows its progress. A stream silent for `stallMs` while layers are
   * downloading is cut (the engine ends a pull whose client went away, so the caller can
   * start it again cleanly); once all are downloaded the limit is `EXTRACT_STALL_FACTOR` times
   * longer.
   */
  async pull(ref: string, options: PullOptions = {}): Promise<PullResult> {
    const { name, tag } = splitReference(ref);
    const query = new URLSearchParams({ fromImage: name, tag });
    if (options.platform) query.set('platform', options.platform);
    const headers: Record<string, string> = {};
    if (options.registryAuth) headers['x-registry-auth'] = options.registryAuth;

    const stall = new AbortController();
    const giveUp = new AbortController();
    const own = [stall.signal, giveUp.signal];
    const signal = AbortSignal.any(options.signal ? [options.signal, ...own] : own);
    const stallMs = options.stallMs ?? 0;
    let timer: NodeJS.Timeout | undefined;
    let limitMs = stallMs;
    const stream = new PullStream(ref);
    const arm = () => {
      if (stallMs <= 0) return;
      limitMs = stream.downloading ? stallMs : stallMs * EXTRACT_STALL_FACTOR;
      clearTimeout(timer);
      timer = setTimeout(() => stall.abort(), limitMs);
    };

    arm();
    try {
      const res = await this.send('POST', `/images/create?${query}`, {
        headers,
        signal,
        streaming: true,
      });
      await this.check(res, `pull of ${ref}`);
      res.body.setEncoding('utf8');
      for await (const chunk of res.body) {
        if (stream.write(chunk as string)) {
          arm();
          options.onProgress?.(stream.progress());
        }
        if (options.maxRetries !== undefined && stream.retries > options.maxRetries) {
          giveUp.abort();
          break;
        }
      }
      if (giveUp.signal.aborted) throw tooManyRetries(ref, stream.retries);
      return stream.end();
    } catch (err) {
      if (stall.signal.aborted && !options.signal?.aborted) {
        throw new WharfError(
          'WHARF_PULL_STALLED',
          `pull of ${ref} made no progress for ${Math.round(limitMs / 1000)} s` +
            (stream.downloading ? '' : ' after its layers were downloaded'),
          {
            hint: stream.downloading
              ? 'the registry or the network stopped sending; wharf retries a stalled pull'
              : 'the engine went quiet extracting the layers; check its disk and its log',
            detail: { ref, bytes: stream.progress().bytes, limitMs },
          },
        );
      }
      throw err;
    } finally {
      clearTimeout(timer);
    }
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }

  private async json<T>(method: Method, path: string): Promise<T> {
    const res = await this.send(method, path);
    await this.check(res, `${method} ${path.split('?')[0]}`);
    return (await res.body.json()) as T;
  }

  private async send(
    method: Method,
    path: string,
    opts: {
      versioned?: boolean;
      headers?: Record<string, string>;
      signal?: AbortSignal;
      streaming?: boolean;
    } = {},
  ): Promise<Dispatcher.ResponseData> {
    const prefix = opts.versioned === false ? '' : `/v${await this.negotiate()}`;
    try {
      return await request(`${this.origin}${prefix}${path}`, {
        method,
        dispatcher: this.dispatcher,
        headers: opts.headers,
        signal: opts.signal,
        // A pull's stream is watched for stalls by the caller; a pull may rightly take hours.
        headersTimeout: opts.streaming ? 0 : this.timeoutMs,
        bodyTimeout: opts.streaming ? 0 : this.timeoutMs,
      });
    } catch (err) {
      if (opts.signal?.aborted || isWharfError(err)) throw err;
      throw unreachable(this.address, err, this.tls);
    }
  }

  private async check(res: Dispatcher.ResponseData, what: string): Promise<void> {
    if (res.statusCode >= 200 && res.statusCode < 300) return;
    const text = await res.body.text().catch(() => '');
    let message = text.trim();
    try {
      message = (JSON.parse(text) as { message?: string }).message ?? message;
    } catch {
      // Not JSON: the text as it came.
    }
    throw new WharfError('WHARF_ENGINE_ERROR', `${what} failed: ${message || res.statusCode}`, {
      detail: { status: res.statusCode, engine: this.address },
    });
  }
}

/** Certificates for a TLS engine, read once; a file named but unreadable is a usage error. */
const TLS_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|ERR_TLS|ERR_SSL|EPROTO/;

function tlsOptions(tls: EngineTls | undefined): Record<string, unknown> {
  if (!tls) return {};
  const read = (path: string | undefined) => {
    if (!path) return undefined;
    try {
      return readFileSync(path);
    } catch (err) {
      throw new WharfError('WHARF_BAD_USAGE', `cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`, {
        hint: 'DOCKER_CERT_PATH names the folder with the engine\'s ca.pem, cert.pem and key.pem',
      });
    }
  };
  return {
    ca: read(tls.caFile),
    cert: read(tls.certFile),
    key: read(tls.keyFile),
    rejectUnauthorized: tls.verify,
  };
}

/** Why the engine could not be reached, with a hint for the causes users meet most. */
export function unreachable(address: string, err: unknown, tls: boolean): WharfError {
  const code = (err as { code?: string }).code ?? (err as { cause?: { code?: string } }).cause?.code;
  // A unix socket refuses with EACCES; a Windows named pipe whose ACL leaves the user out
  // surfaces as EPERM.
  const denied = code === 'EACCES' || code === 'EPERM';
  // An engine that refuses a client certificate just closes the connection after the handshake.
  const tlsFailed = code !== undefined && (TLS_ERRORS.test(code) || (tls && code !== 'ECONNREFUSED'));
  const hint =
    denied
      ? 'this user may not use the engine\'s socket or pipe: add it to the docker group ' +
        '(docker-users on Windows), or run as an administrator'
      : tlsFailed
        ? 'the engine\'s TLS did not check out: DOCKER_CERT_PATH must hold the ca.pem that ' +
          'signed its certificate, and the cert.pem and key.pem it accepts'
        : 'is the engine running? Point wharf at it with --engine or DOCKER_HOST';
  return new WharfError(
    'WHARF_ENGINE_UNREACHABLE',
    `cannot reach the container engine at ${address}: ${(err as Error).message}`,
    { hint, cause: err, detail: { engine: address } },
  );
}

function tooManyRetries(ref: string, retries: number): WharfError {
  return new WharfError(
    'WHARF_PULL_FAILED',
    `pull of ${ref} failed: the registry broke off layer downloads ${retries} times`,
    { hint: 'the registry or the network between it and the engine is failing; try another' },
  );
}

/** Splits `host/repo:tag` or `host/repo@sha256:...` the way the engine's pull wants it. */
export function splitReference(ref: string): { name: string; tag: string } {
  const at = ref.indexOf('@');
  if (at >= 0) return { name: ref.slice(0, at), tag: ref.slice(at + 1) };
  const colon = ref.lastIndexOf(':');
  if (colon > ref.lastIndexOf('/')) {
    return { name: ref.slice(0, colon), tag: ref.slice(colon + 1) };
  }
  return { name: ref, tag: 'latest' };
}
