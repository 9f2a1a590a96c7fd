import type { Readable } from 'node:stream';

import { request, type Dispatcher } from 'undici';

/** Same shape as the registry's htpasswd user and the token server's account. */
export interface RegistryCredentials {
  user: string;
  password: string;
}

export interface ClientRequest {
  headers?: Record<string, string>;
  /** A factory for stream bodies, so the request can be replayed after a 401. */
  body?: Buffer | string | (() => Readable);
}

export interface ClientResponse {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

export interface RegistryClient {
  readonly baseUrl: string;
  /** `pathOrUrl` is a /v2/... path or an absolute URL (an upload Location). */
  request(method: string, pathOrUrl: string, init?: ClientRequest): Promise<ClientResponse>;
}

/**
 * A tiny distribution API client for tests: answers a 401 challenge once, with basic
 * auth or the bearer-token flow, then keeps using that Authorization for later calls.
 */
export function registryClient(
  baseUrl: string,
  credentials?: RegistryCredentials,
): RegistryClient {
  let authorization: string | undefined;

  const send = async (method: string, url: URL, init: ClientRequest) => {
    const headers: Record<string, string> = { ...init.headers };
    if (authorization) headers.authorization = authorization;
    const body = typeof init.body === 'function' ? init.body() : init.body;
    const res = await request(url, { method: method as Dispatcher.HttpMethod, headers, body });
    return {
      status: res.statusCode,
      headers: flatten(res.headers),
      body: Buffer.from(await res.body.arrayBuffer()),
    };
  };

  return {
    baseUrl,
    async request(method, pathOrUrl, init = {}) {
      const url = new URL(pathOrUrl, baseUrl);
      const first = await send(method, url, init);
      if (first.status !== 401) return first;
      const challenge = first.headers['www-authenticate'];
      if (!challenge) return first;
      authorization = await answerChallenge(challenge, credentials);
      return send(method, url, init);
    },
  };
}

async function answerChallenge(
  challenge: string,
  credentials: RegistryCredentials | undefined,
): Promise<string | undefined> {
  const basic = credentials
    ? `Basic ${Buffer.from(`${credentials.user}:${credentials.password}`).toString('base64')}`
    : undefined;
  if (/^basic\b/i.test(challenge)) return basic;

  const params = Object.fromEntries(
    [...challenge.matchAll(/(\w+)="([^"]*)"/g)].map((m) => [m[1]!.toLowerCase(), m[2]!]),
  );
  if (!params.realm) throw new Error(`bearer challenge without realm: ${challenge}`);
  const tokenUrl = new URL(params.realm);
  if (params.service) tokenUrl.searchParams.set('service', params.service);
  for (const scope of (params.scope ?? '').split(' ').filter(Boolean)) {
    tokenUrl.searchParams.append('scope', scope);
  }
  const res = await request(tokenUrl, { headers: basic ? { authorization: basic } : {} });
  const text = await res.body.text();
  if (res.statusCode !== 200) {
    throw new Error(`token request to ${params.realm} failed: ${res.statusCode}`);
  }
  const json = JSON.parse(text) as { token?: string; access_token?: string };
  return `Bearer ${json.token ?? json.access_token}`;
}

function flatten(headers: Record<string, string | string[] | undefined>) {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(headers)) {
    if (value !== undefined) out[name] = Array.isArray(value) ? value.join(', ') : value;
  }
  return out;
}
