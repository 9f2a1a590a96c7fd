import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WharfError, toWharfError } from '../errors.js';
import type { Logger } from '../log.js';
import type { MirrorConfig, UpstreamConfig } from './config.js';
import { MirrorMetrics, type RequestKind } from './metrics.js';
import { Mirror, type BlobSource } from './mirror.js';
import { Router, type Route } from './routing.js';
import { isValidTag } from '../oci/reference.js';
import type { TagQuery } from '../upstream/client.js';
import { parseRange } from './range.js';
import { sendFile } from './send-file.js';
import { Pinner } from './pinner.js';

export interface RunningMirror {
  url: string;
  mirror: Mirror;
  metrics: MirrorMetrics;
  pinner: Pinner;
  close(): Promise<void>;
}

const API_VERSION = { 'docker-distribution-api-version': 'registry/2.0' };

function forgetMovedUpstreams(mirror: Mirror, config: MirrorConfig, logger: Logger): void {
  for (const { name, was, url } of mirror.index.recordUpstreams(config.upstreams)) {
    logger.warn({ upstream: name, url, was }, 'upstream NAME now points at another URL: ' +
      'its tags and verified repositories are forgotten, blobs are confirmed again before use');
  }
}

/** Starts `wharf serve`: opens the store, then listens. Resolves once it accepts requests. */
export async function startMirror(config: MirrorConfig, logger: Logger): Promise<RunningMirror> {
  const metrics = new MirrorMetrics();
  const mirror = await Mirror.open(config, logger, metrics);
  // Before the first request: nothing a NAME's old registry confirmed may be served for its new one.
  try {
    forgetMovedUpstreams(mirror, config, logger);
  } catch (err) {
    await mirror.close();
    throw err;
  }
  const router = new Router(config.upstreams);
  const pinner = new Pinner(mirror, router, mirror.index, logger);
  const server = createServer((req, res) => {
    handle(req, res, { mirror, router, metrics, logger }).catch((err) => {
      logger.error({ err: (err as Error).message }, 'request handler failed');
      if (!res.headersSent) sendError(res, toWharfError(err));
      else res.destroy();
    });
  });
  // Blob responses can be long; the defaults would cut off a slow client mid-blob.
  server.requestTimeout = 0;
  server.keepAliveTimeout = 65_000;

  await listen(server, config.listen.host, config.listen.port);
  const address = server.address() as AddressInfo;
  const host = address.family === 'IPv6' ? `[${address.address}]` : address.address;
  const url = `http://${host}:${address.port}`;
  logger.info(
    { listen: url, data: config.data, upstreams: config.upstreams.map((u) => u.name) },
    'mirror listening',
  );

  // Pins are fetched in the background: the mirror serves what it has meanwhile.
  try {
    pinner.syncConfigPins(config.cache.pins);
  } catch (err) {
    server.close();
    await mirror.close();
    throw err;
  }
  pinner.start(config.tagTtlMs);

  return {
    url,
    mirror,
    metrics,
    pinner,
    close: async () => {
      await pinner.stop();
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
      await mirror.close();
    },
  };
}

function listen(server: Server, host: string, port: number): Promise<void> {
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      reject(
        new WharfError('WHARF_CONFIG_INVALID', `cannot listen on ${host}:${port}: ${err.code ?? err.message}`, {
          hint: err.code === 'EADDRINUSE' ? 'another program uses that port; pick another with --listen' : undefined,
        }),
      );
    });
    server.listen(port, host, () => resolve());
  });
}

interface Context {
  mirror: Mirror;
  router: Router;
  metrics: MirrorMetrics;
  logger: Logger;
}

async function handle(req: IncomingMessage, res: ServerResponse, ctx: Context): Promise<void> {
  // The path is taken raw: a URL parser would resolve `..` and `%2e%2e` segments, silently
  // turning one repository name into another. The routing grammar refuses them instead.
  const raw = req.url ?? '/';
  const q = raw.indexOf('?');
  const url = {
    pathname: q < 0 ? raw : raw.slice(0, q),
    searchParams: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)),
  };
  const method = req.method ?? 'GET';

  if (url.pathname === '/healthz') return sendText(res, 200, 'ok\n');
  if (url.pathname === '/metrics' && method === 'GET') {
    res.setHeader('content-type', ctx.metrics.registry.contentType);
    return sendText(res, 200, await ctx.metrics.registry.metrics());
  }

  let route;
  try {
    route = ctx.router.resolve(url.pathname, url.searchParams.get('ns'));
  } catch (err) {
    return sendError(res, toWharfError(err));
  }
  if (route.kind === 'base') {
    res.writeHead(200, { ...API_VERSION, 'content-type': 'application/json' });
    return void res.end('{}');
  }
  if (route.kind === 'push' || (route.kind !== 'other' && method !== 'GET' && method !== 'HEAD')) {
    return sendError(res, new WharfError('WHARF_UNSUPPORTED', 'this mirror is read-only', {
      hint: 'push to the origin registry; the mirror fetches from it',
    }));
  }
  if (route.kind === 'other') {
    return sendError(res, new WharfError('WHARF_NAME_UNKNOWN', `no such endpoint ${url.pathname}`));
  }

  if (route.kind === 'tags') return sendTags(res, route, url.searchParams, method, ctx);

  const kind: RequestKind = route.kind === 'manifest'
    ? (method === 'HEAD' ? 'manifest_head' : 'manifest')
    : (method === 'HEAD' ? 'blob_head' : 'blob');
  const timer = ctx.metrics.requestSeconds.startTimer({ kind });
  try {
    if (route.kind === 'manifest') {
      const m = await ctx.mirror.manifest(route.upstream, route.repo, route.ref);
      ctx.metrics.requests.inc({ kind, outcome: m.outcome });
      res.writeHead(200, {
        ...API_VERSION,
        'content-type': m.mediaType,
        'content-length': m.body.length,
        'docker-content-digest': m.digest,
        etag: `"${m.digest}"`,
      });
      timer();
      return void res.end(method === 'HEAD' ? undefined : m.body);
    }
    if (method === 'HEAD') {
      const head = await ctx.mirror.blobHead(route.upstream, route.repo, route.digest);
      ctx.metrics.requests.inc({ kind, outcome: head.outcome });
      res.writeHead(200, { ...API_VERSION, ...blobHeaders(route.digest, head.size) });
      timer();
      return void res.end();
    }
    const source = await ctx.mirror.blob(route.upstream, route.repo, route.digest);
    if (source.kind === 'store') {
      // The client may have left while the mirror asked the upstream; 'close' is gone then,
      // and a hold never released would keep the blob from eviction for good.
      if (res.closed || res.destroyed || !res.socket || res.socket.destroyed) {
        source.release();
        return;
      }
      res.once('close', source.release);
    }
    ctx.metrics.requests.inc({ kind, outcome: source.outcome });
    timer();
    await sendBlob(req, res, source, route.upstream, ctx);
  } catch (err) {
    const error = toWharfError(err);
    ctx.metrics.requests.inc({ kind, outcome: error.status === 404 ? 'not_found' : 'error' });
    if (error.code === 'WHARF_INTERNAL') ctx.logger.error({ err: error.message }, 'request failed');
    if (res.headersSent) res.destroy();
    else sendError(res, error);
  }
}

/** Tag lists pass through to the upstream, paged as it pages them, with the client's names. */
async function sendTags(
  res: ServerResponse,
  route: Extract<Route, { kind: 'tags' }>,
  params: URLSearchParams,
  method: string,
  ctx: Context,
): Promise<void> {
  const timer = ctx.metrics.requestSeconds.startTimer({ kind: 'tags' });
  try {
    const query = tagQuery(params);
    const page = await ctx.mirror.tags(route.upstream, route.repo, query);
    ctx.metrics.requests.inc({ kind: 'tags', outcome: page.outcome });
    const body = JSON.stringify({ name: route.path, tags: page.tags });
    const headers: Record<string, string | number> = {
      ...API_VERSION,
      'content-type': 'application/json',
      'content-length': Buffer.byteLength(body),
    };
    if (page.next !== undefined) {
      const next = new URLSearchParams();
      if (query.n !== undefined) next.set('n', String(query.n));
      next.set('last', page.next);
      const ns = params.get('ns');
      if (ns !== null) next.set('ns', ns);
      headers.link = `</v2/${route.path}/tags/list?${next}>; rel="next"`;
    }
    res.writeHead(200, headers);
    timer();
    res.end(method === 'HEAD' ? undefined : body);
  } catch (err) {
    const error = toWharfError(err);
    ctx.metrics.requests.inc({ kind: 'tags', outcome: error.status === 404 ? 'not_found' : 'error' });
    sendError(res, error);
  }
}

/** `?n=` and `?last=` of a tag list request, checked before they go into an upstream URL. */
function tagQuery(params: URLSearchParams): TagQuery {
  const query: TagQuery = {};
  const n = params.get('n');
  if (n !== null) {
    if (!/^\d{1,9}$/.test(n)) {
      throw new WharfError('WHARF_PAGINATION_INVALID', `n=${JSON.stringify(n)} is not a page size`, {
        hint: 'give n as a whole number of tags',
      });
    }
    query.n = Number(n);
  }
  const last = params.get('last');
  if (last !== null) {
    if (!isValidTag(last)) {
      throw new WharfError('WHARF_PAGINATION_INVALID', `last=${JSON.stringify(last)} is not a tag`, {
        hint: 'give last as the final tag of the previous page',
      });
    }
    query.last = last;
  }
  return query;
}

function blobHeaders(digest: string, size: number | undefined): Record<string, string | number> {
  const headers: Record<string, string | number> = {
    'content-type': 'application/octet-stream',
    'docker-content-digest': digest,
    etag: `"${digest}"`,
    'accept-ranges': 'bytes',
  };
  if (size !== undefined) headers['content-length'] = size;
  return headers;
}

async function sendBlob(
  req: IncomingMessage,
  res: ServerResponse,
  source: BlobSource,
  upstream: UpstreamConfig,
  ctx: Context,
): Promise<void> {
  // An empty body is complete as soon as its headers arrive: with no last byte to hold back
  // until the digest check, the headers wait for it (and a wrong blob gets an error instead).
  if (source.kind === 'fetch' && source.size === 0) await source.fetch.verified();
  const range = parseRange(req.headers.range, source.size);
  const headers: Record<string, string | number> = {
    ...API_VERSION,
    ...blobHeaders(source.digest, source.size),
  };
  if (range) {
    headers['content-length'] = range.end - range.start;
    headers['content-range'] = `bytes ${range.start}-${range.end - 1}/${source.size}`;
  }
  res.writeHead(range ? 206 : 200, headers);

  if (source.kind === 'store') {
    let sent = 0;
    try {
      const end = range?.end ?? source.size;
      sent = await sendFile(res, source.file, range?.start ?? 0, end, source.digest);
      res.end();
    } catch (err) {
      ctx.logger.warn({ digest: source.digest, err: (err as Error).message }, 'blob response failed');
      res.destroy();
    } finally {
      ctx.metrics.servedBytes.inc({ source: 'store' }, sent);
    }
    return;
  }

  // Out now rather than with the first bytes: a fetch that breaks before any arrive must reach
  // the client as a transfer cut short (which engines retry as one), not as a connection
  // closed without an answer.
  res.flushHeaders();
  try {
    const sent = await source.fetch.pipeTo(res, range?.start ?? 0, range?.end);
    ctx.metrics.servedBytes.inc({ source: 'fetch' }, sent);
    res.end();
  } catch (err) {
    // The fetch went wrong after the headers went out: break the connection so the client
    // sees a failed transfer, never a complete-looking wrong blob.
    ctx.logger.warn(
      { upstream: upstream.name, digest: source.digest, err: (err as Error).message },
      'client stream broken',
    );
    res.destroy();
  }
}

function sendText(res: ServerResponse, status: number, body: string): void {
  res.statusCode = status;
  if (!res.hasHeader('content-type')) res.setHeader('content-type', 'text/plain; charset=utf-8');
  res.end(body);
}

/** Writes an error in the distribution spec's JSON format, with the hint as its detail. */
export function sendError(res: ServerResponse, err: WharfError): void {
  const body = JSON.stringify({
    errors: [{ code: err.ociCode, message: err.message, detail: { code: err.code, hint: err.hint } }],
  });
  const headers: Record<string, string | number> = {
    ...API_VERSION,
    'content-type': 'application/json',
    'content-length': Buffer.byteLength(body),
  };
  res.writeHead(err.status, headers);
  res.end(body);
}
