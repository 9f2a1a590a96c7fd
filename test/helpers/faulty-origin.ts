import {
  Agent, createServer, request, type IncomingMessage, type ServerResponse,
} from 'node:http';
import type { AddressInfo, Socket } from 'node:net';

import { drained } from '../../src/util/drained.js';
import { Pacer } from './pacer.js';
import { registerCleanup } from './tmp.js';

export interface RequestRecord {
  method: string;
  /** Path and query, as the client sent them. */
  path: string;
  /** Status sent, or 0 when the connection was cut or refused before headers. */
  status: number;
  /** Body bytes sent to the client. */
  bytes: number;
}

export interface FaultOptions {
  /** How many responses the fault applies to before it heals (default: until cleared). */
  times?: number;
}

export interface FaultyOrigin {
  /** http://127.0.0.1:PORT */
  url: string;
  host: string;
  port: number;
  readonly requests: readonly RequestRecord[];
  /** Requests whose method matches and whose path matches the pattern. */
  count(method: string, path: RegExp): number;
  /** Body bytes of GETs for that blob that reached clients, cut responses included. */
  blobBytesSent(digest: string): number;
  /** Sends the headers with the full Content-Length, then drops the connection. */
  cutBlob(digest: string, afterBytes: number, options?: FaultOptions): void;
  /** Sends the blob's full length with every byte inverted. */
  corruptBlob(digest: string, options?: FaultOptions): void;
  /** Answers the blob's GET with 200 and `Content-Length: 0`, as a registry that lost its file. */
  emptyBlob(digest: string, options?: FaultOptions): void;
  /** Sends the blob at this rate (each response on its own). */
  slowBlob(digest: string, bytesPerSecond: number, options?: FaultOptions): void;
  /** Answers matching requests with `status` and an OCI error body, instead of forwarding. */
  failRequests(method: string, path: RegExp, status: number, options?: FaultOptions): void;
  /** Takes matching requests and never answers them: the client's timeout is all it gets. */
  hangRequests(method: string, path: RegExp, options?: FaultOptions): void;
  /** Removes every fault (or those for one blob digest). */
  clearFaults(digest?: string): void;
  /** Stops listening and drops open connections: clients get ECONNREFUSED. */
  down(): Promise<void>;
  /** Listens on the same port again. */
  up(): Promise<void>;
  /** Forgets the request log and byte counts. */
  resetCounters(): void;
  stop(): Promise<void>;
}

type BlobFault =
  | { kind: 'cut'; afterBytes: number; left: number }
  | { kind: 'corrupt'; left: number }
  | { kind: 'empty'; left: number }
  | { kind: 'slow'; bytesPerSecond: number; left: number };

/** The status of a request fault that never answers (0: nothing was sent, as in the log). */
const HANG = 0;

interface RequestFault {
  method: string;
  path: RegExp;
  status: number;
  left: number;
}

const BLOB_PATH = /^\/v2\/.+\/blobs\/(sha256:[a-f0-9]{64})(?:\?.*)?$/;

/**
 * An HTTP reverse proxy in front of a registry with switchable faults, for testing how
 * the mirror copes with an origin that breaks mid-blob, lies, crawls or disappears.
 * The Host header is passed through, so the registry's Location URLs point here.
 */
export async function startFaultyOrigin(targetUrl: string): Promise<FaultyOrigin> {
  const target = new URL(targetUrl);
  const agent = new Agent({ keepAlive: true });
  const requests: RequestRecord[] = [];
  const blobBytes = new Map<string, number>();
  const blobFaults = new Map<string, BlobFault>();
  let requestFaults: RequestFault[] = [];
  const sockets = new Set<Socket>();

  const server = createServer((req, res) => {
    const record: RequestRecord = {
      method: req.method ?? 'GET', path: req.url ?? '/', status: 0, bytes: 0,
    };
    requests.push(record);

    const failure = requestFaults.find((f) =>
      f.left > 0 && f.method === record.method && f.path.test(record.path));
    if (failure) {
      failure.left--;
      record.status = failure.status;
      // Left open: the socket is dropped when the client gives up or the origin stops.
      if (failure.status === HANG) return;
      const body = JSON.stringify({
        errors: [{ code: 'UNAVAILABLE', message: `injected ${failure.status}`, detail: null }],
      });
      res.writeHead(failure.status, { 'content-type': 'application/json' });
      res.end(record.method === 'HEAD' ? undefined : body);
      return;
    }

    const digest = record.method === 'GET' ? BLOB_PATH.exec(record.path)?.[1] : undefined;
    forward(req, res, record, digest);
  });
  server.on('connection', (socket) => {
    sockets.add(socket);
    socket.on('close', () => sockets.delete(socket));
  });

  function forward(
    req: IncomingMessage,
    res: ServerResponse,
    record: RequestRecord,
    digest: string | undefined,
  ): void {
    const upstream = request({
      host: target.hostname,
      port: target.port,
      method: req.method,
      path: req.url,
      headers: req.headers,
      agent,
    }, (upRes) => {
      record.status = upRes.statusCode ?? 0;
      const fault = digest && record.status < 300 && req.method === 'GET' ? takeFault(digest) : undefined;
      if (fault?.kind === 'empty') {
        upRes.destroy();
        res.writeHead(record.status, {
          'content-type': 'application/octet-stream',
          'content-length': 0,
          'docker-content-digest': digest!,
        });
        return void res.end();
      }
      res.writeHead(record.status, upRes.statusMessage, upRes.rawHeaders);
      void relayBody(upRes, res, record, digest, fault);
    });
    upstream.on('error', () => {
      if (res.headersSent) return void res.destroy();
      record.status = 502;
      res.writeHead(502, { 'content-type': 'application/json' });
      res.end('{"errors":[{"code":"UNAVAILABLE","message":"origin unreachable"}]}');
    });
    // A client that gives up must not leave the upstream transfer running.
    res.on('close', () => {
      if (!res.writableFinished) upstream.destroy();
    });
    req.pipe(upstream);
  }

  function takeFault(digest: string): BlobFault | undefined {
    const fault = blobFaults.get(digest);
    if (!fault) return undefined;
    fault.left--;
    if (fault.left <= 0) blobFaults.delete(digest);
    return fault;
  }

  async function relayBody(
    upRes: IncomingMessage,
    res: ServerResponse,
    record: RequestRecord,
    digest: string | undefined,
    fault: BlobFault | undefined,
  ): Promise<void> {
    const pacer = fault?.kind === 'slow' ? new Pacer(fault.bytesPerSecond) : undefined;
    const sent = (n: number) => {
      record.bytes += n;
      if (digest) blobBytes.set(digest, (blobBytes.get(digest) ?? 0) + n);
    };
    try {
      for await (const data of upRes as AsyncIterable<Buffer>) {
        let chunk = data;
        if (fault?.kind === 'cut' && record.bytes + chunk.length >= fault.afterBytes) {
          chunk = chunk.subarray(0, fault.afterBytes - record.bytes);
          sent(chunk.length);
          // Flush what the fault lets through, then drop the connection mid-body.
          res.write(chunk, () => res.destroy());
          upRes.destroy();
          return;
        }
        if (fault?.kind === 'corrupt') chunk = invert(chunk);
        if (pacer) await pacer.take(chunk.length);
        if (res.destroyed) return void upRes.destroy();
        sent(chunk.length);
        if (!res.write(chunk)) await drained(res);
      }
      res.end();
    } catch {
      res.destroy();
    }
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  let listening = true;

  const down = async () => {
    if (!listening) return;
    listening = false;
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    for (const socket of sockets) socket.destroy();
    await closed;
  };
  const up = async () => {
    if (listening) return;
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(port, '127.0.0.1', () => {
        server.off('error', reject);
        resolve();
      });
    });
    listening = true;
  };

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= down().then(() => agent.destroy());
    return stopped;
  };
  registerCleanup(stop);

  const times = (options?: FaultOptions) => options?.times ?? Infinity;
  return {
    url: `http://127.0.0.1:${port}`,
    host: `127.0.0.1:${port}`,
    port,
    requests,
    count: (method, path) =>
      requests.filter((r) => r.method === method && path.test(r.path)).length,
    blobBytesSent: (digest) => blobBytes.get(digest) ?? 0,
    cutBlob: (digest, afterBytes, options) => {
      blobFaults.set(digest, { kind: 'cut', afterBytes, left: times(options) });
    },
    emptyBlob: (digest, options) => {
      blobFaults.set(digest, { kind: 'empty', left: times(options) });
    },
    corruptBlob: (digest, options) => {
      blobFaults.set(digest, { kind: 'corrupt', left: times(options) });
    },
    slowBlob: (digest, bytesPerSecond, options) => {
      blobFaults.set(digest, { kind: 'slow', bytesPerSecond, left: times(options) });
    },
    failRequests: (method, path, status, options) => {
      requestFaults.push({ method, path, status, left: times(options) });
    },
    hangRequests: (method, path, options) => {
      requestFaults.push({ method, path, status: HANG, left: times(options) });
    },
    clearFaults: (digest) => {
      if (digest) return void blobFaults.delete(digest);
      blobFaults.clear();
      requestFaults = [];
    },
    down,
    up,
    resetCounters: () => {
      requests.length = 0;
      blobBytes.clear();
    },
    stop,
  };
}

function invert(chunk: Buffer): Buffer {
  const out = Buffer.allocUnsafe(chunk.length);
  for (let i = 0; i < chunk.length; i++) out[i] = chunk[i]! ^ 0xff;
  return out;
}
