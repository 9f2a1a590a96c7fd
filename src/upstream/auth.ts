import { request, type Dispatcher } from 'undici';
import { WharfError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseChallenge, type Challenge } from './challenge.js';
import type { Credentials } from './credentials.js';

interface CachedToken {
  token: string;
  expiresAt: number;
}

// Tokens are renewed a little before they expire so a request never goes out with one that
// dies in flight; registries that omit expires_in mean 60 s (distribution's token spec).
const DEFAULT_TOKEN_SECONDS = 60;
const EXPIRY_MARGIN_MS = 5_000;

export function basicHeader(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
}

/**
 * Answers an upstream's authentication challenges the way a registry client does: bearer tokens
 * from the realm the upstream names, cached per scope until they expire, or basic auth.
 */
export class Authenticator {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();
  private scheme: 'none' | 'basic' | 'bearer' = 'none';
  private lastChallenge: Challenge | undefined;

  constructor(
    private readonly upstream: string,
    private readonly credentials: () => Promise<Credentials | undefined>,
    private readonly dispatcher: Dispatcher,
    private readonly logger: Logger,
  ) {}

  /** The Authorization header to send up front for a scope, when one is known to be needed. */
  async headerFor(scope: string): Promise<string | undefined> {
    if (this.scheme === 'basic') {
      const creds = await this.credentials();
      return creds ? basicHeader(creds) : undefined;
    }
    if (this.scheme === 'bearer') {
      const cached = this.tokens.get(scope);
      if (cached && cached.expiresAt > Date.now()) return `Bearer ${cached.token}`;
      if (this.lastChallenge) return `Bearer ${await this.token(this.lastChallenge, scope)}`;
    }
    return undefined;
  }

  /**
   * Handles a 401: learns the scheme from the challenge and returns the header to retry with,
   * or undefined when there is nothing more to try.
   */
  async answer(header: string | undefined, scope: string, sent: string | undefined) {
    const challenge = parseChallenge(header);
    if (!challenge) return undefined;
    if (challenge.scheme === 'basic') {
      this.scheme = 'basic';
      const creds = await this.credentials();
      const value = creds ? basicHeader(creds) : undefined;
      return value === sent ? undefined : value;
    }
    if (challenge.scheme !== 'bearer' || !challenge.params.realm) return undefined;
    this.scheme = 'bearer';
    this.lastChallenge = challenge;
    // A token we just sent was refused: drop it and ask for a fresh one, once.
    if (sent?.startsWith('Bearer ')) {
      // Concurrent requests that sent the same token all get here: the first drops it, the
      // others then find the token it fetched (or its pending fetch) and retry with that.
      if (this.tokens.get(scope)?.token === sent.slice(7)) this.tokens.delete(scope);
      const fresh = `Bearer ${await this.token(challenge, scope)}`;
      return fresh === sent ? undefined : fresh;
    }
    return `Bearer ${await this.token(challenge, scope)}`;
  }

  private token(challenge: Challenge, scope: string): Promise<string> {
    const cached = this.tokens.get(scope);
    if (cached && cached.expiresAt > Date.now()) return Promise.resolve(cached.token);
    let pending = this.pending.get(scope);
    if (!pending) {
      pending = this.fetchToken(challenge, scope).finally(() => this.pending.delete(scope));
      this.pending.set(scope, pending);
    }
    return pending;
  }

  private async fetchToken(challenge: Challenge, scope: string): Promise<string> {
    const realm = challenge.params.realm!;
    let url: URL;
    try {
      url = new URL(realm);
    } catch {
      throw new WharfError('WHARF_UPSTREAM_PROTOCOL', `upstream ${this.upstream} named a bad token realm`);
    }
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', scope);

    const creds = await this.credentials();
    const headers: Record<string, string> = {};
    if (creds) headers.authorization = basicHeader(creds);
    let res: Dispatcher.ResponseData;
    try {
      res = await request(url, { method: 'GET', headers, dispatcher: this.dispatcher });
    } catch (err) {
      throw new WharfError(
        'WHARF_UPSTREAM_UNAVAILABLE',
        `token server of upstream ${this.upstream} (${url.host}) is unreachable`,
        { cause: err, hint: 'check that the registry\'s token service is reachable from the mirror' },
      );
    }
    let text: string;
    try {
      text = await res.body.text();
    } catch (err) {
      throw new WharfError(
        'WHARF_UPSTREAM_UNAVAILABLE',
        `token server of upstream ${this.upstream} (${url.host}) broke off its answer`,
        { cause: err },
      );
    }
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new WharfError(
        'WHARF_UPSTREAM_UNAUTHORIZED',
        `token server of upstream ${this.upstream} refused ${creds ? 'the credentials' : 'anonymous access'}`,
        {
          hint: creds
            ? 'check the username and password configured for this upstream'
            : `configure credentials for ${this.upstream} (config file, environment or docker login)`,
        },
      );
    }
    if (res.statusCode >= 300) {
      throw new WharfError(
        res.statusCode === 429 ? 'WHARF_UPSTREAM_TOO_MANY_REQUESTS' : 'WHARF_UPSTREAM_UNAVAILABLE',
        `token server of upstream ${this.upstream} answered ${res.statusCode}`,
      );
    }
    let body: { token?: string; access_token?: string; expires_in?: number; issued_at?: string };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new WharfError('WHARF_UPSTREAM_PROTOCOL', `token server of upstream ${this.upstream} sent no JSON`);
    }
    const token = body.token ?? body.access_token;
    if (!token) {
      throw new WharfError('WHARF_UPSTREAM_PROTOCOL', `token server of upstream ${this.upstream} sent no token`);
    }
    const seconds = body.expires_in && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
    this.tokens.set(scope, { token, expiresAt: Date.now() + seconds * 1000 - EXPIRY_MARGIN_MS });
    this.logger.debug({ upstream: this.upstream, scope, seconds }, 'token issued');
    return token;
  }
}
