import { execFile } from 'node:child_process';
import { createHash, createPrivateKey, randomUUID, sign, X509Certificate } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { makeTempDir, registerCleanup } from './tmp.js';

const run = promisify(execFile);

export interface TokenServerOptions {
  /** The one account that may log in (default wharf / wharf-secret). */
  user?: string;
  password?: string;
  /**
   * The OAuth2 refresh token (what `docker login` stores as `identitytoken`) that stands for
   * `user` in a POST with grant_type=refresh_token; any other is refused with invalid_grant.
   */
  refreshToken?: string;
  /** Answers every POST with this status, as token servers without OAuth2 do (404 or 405). */
  refusePost?: 404 | 405;
  /** Grants anonymous requests `pull` (only); without it they get a token with no access. */
  anonymousPull?: boolean;
  /** Token lifetime in seconds (default 300). */
  expiresIn?: number;
  /**
   * How the JWT names its signing key: `kid` is the libtrust key ID of the key in the
   * root cert bundle, `x5c` embeds the certificate. distribution 2.8 accepts both.
   */
  keyHeader?: 'kid' | 'x5c';
}

export interface Access {
  type: string;
  name: string;
  actions: string[];
}

export interface TokenRequestRecord {
  method: string;
  /** The account that authenticated, '' when anonymous. */
  account: string;
  /** The form of a POST: its `grant_type`, `client_id` and `service`. */
  grant?: string;
  clientId?: string;
  service?: string;
  scopes: string[];
  status: number;
  granted: Access[];
}

export interface TokenServer {
  url: string;
  /** Where clients get tokens: the `realm` of the registry's challenge. */
  realm: string;
  service: string;
  issuer: string;
  /** PEM certificate for the registry's `rootcertbundle`. */
  rootCertBundle: string;
  /** Token requests answered so far, successful or not. */
  readonly tokenRequests: number;
  readonly requests: readonly TokenRequestRecord[];
  /** Signs a token directly, e.g. to build an expired or foreign-scoped one. */
  issue(account: string, access: Access[], expiresIn?: number): string;
  stop(): Promise<void>;
}

/** A bearer token server for distribution's `auth: token`, signing RS256 JWTs. */
export async function startTokenServer(options: TokenServerOptions = {}): Promise<TokenServer> {
  const dir = await makeTempDir('token');
  const keyPath = join(dir, 'key.pem');
  const certPath = join(dir, 'cert.pem');
  await run('openssl', [
    'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', keyPath, '-out', certPath,
    '-days', '2', '-subj', '/CN=wharf-test-token',
  ]);
  const key = createPrivateKey(await readFile(keyPath));
  const cert = new X509Certificate(await readFile(certPath));

  const user = options.user ?? 'wharf';
  const password = options.password ?? 'wharf-secret';
  const service = 'wharf-test-registry';
  const issuer = 'wharf-test-issuer';
  const lifetime = options.expiresIn ?? 300;
  const header = options.keyHeader === 'x5c'
    ? { typ: 'JWT', alg: 'RS256', x5c: [cert.raw.toString('base64')] }
    : { typ: 'JWT', alg: 'RS256', kid: libtrustKeyId(cert) };

  const issue = (account: string, access: Access[], expiresIn = lifetime): string => {
    const now = Math.floor(Date.now() / 1000);
    const claims = {
      iss: issuer,
      sub: account,
      // distribution 2.8 reads `aud` as a single string, not a list.
      aud: service,
      exp: now + expiresIn,
      // A little slack so a token is valid the instant it is issued.
      nbf: now - 5,
      iat: now,
      jti: randomUUID(),
      access,
    };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(claims))}`;
    return `${input}.${b64url(sign('sha256', Buffer.from(input), key))}`;
  };

  const requests: TokenRequestRecord[] = [];
  const server = createServer((req, res) => {
    handle(req, res).catch((err: Error) => reply(res, 500, { error: err.message }));
  });

  async function handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const url = new URL(req.url ?? '/', 'http://127.0.0.1');
    if (url.pathname !== '/token') return reply(res, 404, { error: 'not found' });

    // GET with basic auth is the classic flow; POST is the OAuth2 form docker login tries.
    let given: { user: string; password: string } | undefined;
    let scopes = url.searchParams.getAll('scope');
    const record: TokenRequestRecord = {
      method: req.method ?? 'GET', account: '', scopes, status: 200, granted: [],
    };
    requests.push(record);
    if (req.method === 'POST') {
      if (options.refusePost) {
        record.status = options.refusePost;
        return reply(res, options.refusePost, { error: 'no oauth here' });
      }
      const form = new URLSearchParams(await readBody(req));
      record.grant = form.get('grant_type') ?? undefined;
      record.clientId = form.get('client_id') ?? undefined;
      record.service = form.get('service') ?? undefined;
      scopes = record.scopes = form.getAll('scope').flatMap((s) => s.split(' ')).filter(Boolean);
      if (record.grant === 'password') {
        given = { user: form.get('username') ?? '', password: form.get('password') ?? '' };
      } else if (record.grant === 'refresh_token') {
        if (!options.refreshToken || form.get('refresh_token') !== options.refreshToken) {
          // RFC 6749 §5.2: a refresh token the server does not know is a 400 invalid_grant.
          record.status = 400;
          return reply(res, 400, { error: 'invalid_grant' });
        }
        given = { user, password };
      }
    } else {
      given = basicCredentials(req.headers.authorization);
    }

    if (given && (given.user !== user || given.password !== password)) {
      record.status = 401;
      return reply(res, 401, { errors: [{ code: 'UNAUTHORIZED', message: 'bad credentials' }] });
    }
    record.account = given ? given.user : '';
    record.granted = scopes.map(parseScope).flatMap((access) => {
      if (!access) return [];
      if (given) return [access];
      if (!options.anonymousPull) return [];
      const actions = access.actions.filter((a) => a === 'pull');
      return actions.length > 0 ? [{ ...access, actions }] : [];
    });

    const token = issue(record.account, record.granted);
    reply(res, 200, {
      token,
      access_token: token,
      expires_in: lifetime,
      issued_at: new Date().toISOString(),
    });
  }

  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  const base = `http://127.0.0.1:${port}`;

  let stopped: Promise<void> | undefined;
  const stop = () => {
    stopped ??= new Promise<void>((resolve) => {
      server.close(() => resolve());
      server.closeAllConnections();
    });
    return stopped;
  };
  registerCleanup(stop);

  return {
    url: base,
    realm: `${base}/token`,
    service,
    issuer,
    rootCertBundle: certPath,
    get tokenRequests() {
      return requests.length;
    },
    requests,
    issue,
    stop,
  };
}

/**
 * libtrust's key ID, which distribution 2.8 uses to find the key for a JWT `kid`:
 * sha256 of the DER public key, first 240 bits, base32, in groups of four.
 */
export function libtrustKeyId(cert: X509Certificate): string {
  const der = cert.publicKey.export({ type: 'spki', format: 'der' });
  const hash = createHash('sha256').update(der).digest().subarray(0, 30);
  const b32 = base32(hash);
  return b32.match(/.{4}/g)!.join(':');
}

function base32(data: Buffer): string {
  const alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZ234567';
  let bits = 0;
  let value = 0;
  let out = '';
  for (const byte of data) {
    value = (value << 8) | byte;
    bits += 8;
    while (bits >= 5) {
      out += alphabet[(value >>> (bits - 5)) & 31];
      bits -= 5;
    }
  }
  if (bits > 0) out += alphabet[(value << (5 - bits)) & 31];
  return out;
}

function parseScope(scope: string): Access | undefined {
  // type:name:actions, where a name may itself hold a colon (host:port/repo).
  const first = scope.indexOf(':');
  const last = scope.lastIndexOf(':');
  if (first < 0 || last === first) return undefined;
  return {
    type: scope.slice(0, first),
    name: scope.slice(first + 1, last),
    actions: scope.slice(last + 1).split(',').filter(Boolean),
  };
}

function basicCredentials(header: string | undefined) {
  const match = /^Basic\s+(.+)$/i.exec(header ?? '');
  if (!match) return undefined;
  const decoded = Buffer.from(match[1]!, 'base64').toString('utf8');
  const colon = decoded.indexOf(':');
  if (colon < 0) return undefined;
  return { user: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString('utf8');
}

function b64url(data: string | Buffer): string {
  return Buffer.from(data).toString('base64url');
}

function reply(res: ServerResponse, status: number, body: unknown): void {
  res.writeHead(status, { 'content-type': 'application/json' });
  res.end(JSON.stringify(body));
}
