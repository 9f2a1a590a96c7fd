import { join } from 'node:path';
import { request } from 'undici';
import { silentLogger, type Logger } from '../../src/log.js';
import { loadMirrorConfig, type MirrorConfig } from '../../src/mirror/config.js';
import { startMirror, type RunningMirror } from '../../src/mirror/server.js';
import { makeTempDir, registerCleanup } from '../helpers/tmp.js';

export interface TestMirrorOptions {
  /** `--upstream` values: `[NAME=]URL`. */
  upstreams: string[];
  data?: string;
  tagTtlMs?: number;
  logger?: Logger;
  /** Adjusts the built configuration before the mirror starts. */
  tweak?: (config: MirrorConfig) => void;
}

/** Starts the mirror in this process on a free loopback port, with its own data folder. */
export async function startTestMirror(options: TestMirrorOptions): Promise<RunningMirror> {
  const data = options.data ?? join(await makeTempDir('mirror'), 'data');
  const config = await loadMirrorConfig({
    listen: '127.0.0.1:0',
    data,
    upstream: options.upstreams,
  });
  if (options.tagTtlMs !== undefined) config.tagTtlMs = options.tagTtlMs;
  options.tweak?.(config);
  const running = await startMirror(config, options.logger ?? silentLogger());
  registerCleanup(() => running.close());
  return running;
}

/** The mirror's host:port, as image references use it. */
export function hostOf(url: string): string {
  return new URL(url).host;
}

export interface Fetched {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** A plain HTTP GET or HEAD against the mirror, body read in full. */
export async function get(
  url: string,
  init: { method?: 'GET' | 'HEAD'; headers?: Record<string, string> } = {},
): Promise<Fetched> {
  const res = await request(url, { method: init.method ?? 'GET', headers: init.headers });
  const body = Buffer.from(await res.body.arrayBuffer());
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) {
    if (v !== undefined) headers[k] = Array.isArray(v) ? v.join(', ') : v;
  }
  return { status: res.statusCode, headers, body };
}

/** Reads a counter or gauge from the mirror's /metrics, summed over matching labels. */
export async function metric(url: string, name: string, labels: Record<string, string> = {}) {
  const text = (await get(`${url}/metrics`)).body.toString('utf8');
  let sum = 0;
  for (const line of text.split('\n')) {
    if (!line.startsWith(name)) continue;
    const m = /^([a-z_]+)(?:\{(.*)\})? (.+)$/.exec(line);
    if (!m || m[1] !== name) continue;
    const have = Object.fromEntries(
      [...(m[2] ?? '').matchAll(/([a-z_]+)="([^"]*)"/g)].map((x) => [x[1], x[2]]),
    );
    if (Object.entries(labels).every(([k, v]) => have[k] === v)) sum += Number(m[3]);
  }
  return sum;
}

/** The `code` of the first error in an OCI error body. */
export function errorCode(body: Buffer): string {
  return (JSON.parse(body.toString()) as { errors: { code: string }[] }).errors[0]!.code;
}
