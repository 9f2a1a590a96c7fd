import { request, type Dispatcher } from 'undici';
import { WharfError } from '../errors.js';
import type { Logger } from '../log.js';
import { parseChallenge, type Challenge } from './challenge.js';
import type { Credentials } from './credentials.js';

/** Credentials as resolved for an upstream: an identity token, when set, replaces the password. */
type UpstreamCredentials = Credentials & { identityToken?: string };

interface CachedToken {
  token: string;
  expiresAt: number;
}

// Tokens are renewed a little before they expire so a request never goes out with one that
// dies in flight; registries that omit expires_in mean 60 s (distribution's token spec).
const DEFAULT_TOKEN_SECONDS = 60;
const EXPIRY_MARGIN_MS = 5_000;

/** How wharf names itself to OAuth2 token servers (distribution's `client_id`). */
const OAUTH_CLIENT_ID = 'wharf';

/** The hint for a refused identity token; `docker login` is what renews one. */
const RELOGIN_HINT =
  'the identity token from docker login was refused or cannot be used here: run docker login ' +
  '(or your registry\'s login command, e.g. az acr login) for this registry again';

export function basicHeader(creds: Credentials): string {
  return `Basic ${Buffer.from(`${creds.username}:${creds.password}`).toString('base64')}`;
}

/**
 * Answers an upstream's authentication challenges the way a registry client does: bearer tokens
 * from the realm the upstream names, cached per scope until they expire, or basic auth. An
 * identity token from docker login is traded at the realm with the OAuth2 refresh_token grant.
 */
export class Authenticator {
  private readonly tokens = new Map<string, CachedToken>();
  private readonly pending = new Map<string, Promise<string>>();
  private scheme: 'none' | 'basic' | 'bearer' = 'none';
  private lastChallenge: Challenge | undefined;
  /** Set once a basic challenge was answered with a username and password. */
  private basicWithCredentials = false;

  constructor(
    private readonly upstream: string,
    private readonly credentials: () => Promise<UpstreamCredentials | undefined>,
    private readonly dispatcher: Dispatcher,
    private readonly logger: Logger,
  ) {}

  /**
   * Whether a refusal from the registry itself (not its token server) came despite
   * credentials: wrong ones, or an account without access, rather than none.
   */
  get refusedCredentials(): boolean {
    return this.scheme === 'basic' && this.basicWithCredentials;
  }

  /** The Authorization header to send up front for a scope, when one is known to be needed. */
  async headerFor(scope: string): Promise<string | undefined> {
    if (this.scheme === 'basic') {
      const creds = await this.credentials();
      return creds && !creds.identityToken ? basicHeader(creds) : undefined;
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
      // An identity token is good only at an OAuth2 token endpoint: as a password it would
      // be refused, and sending it to the registry itself would leak a long-lived secret.
      if (creds?.identityToken) {
        throw new WharfError(
          'WHARF_UPSTREAM_UNAUTHORIZED',
          `upstream ${this.upstream} asks for basic auth, and its docker login holds only an ` +
            'identity token',
          { hint: `${RELOGIN_HINT}, or configure a username and password for ${this.upstream}` },
        );
      }
      const value = creds ? basicHeader(creds) : undefined;
      this.basicWithCredentials = value !== undefined;
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
    const url = this.realmOf(challenge);
    const creds = await this.credentials();

    const identityToken = creds?.identityToken;
    const { status, text } = await this.askTokenServer(url, identityToken
      ? this.refreshGrant(url, challenge, scope, identityToken)
      : this.classicRequest(url, challenge, scope, creds));

    if (identityToken && (status === 404 || status === 405)) {
      // distribution's OAuth2 spec: a token server that answers the POST with 404 knows only
      // the GET flow, which takes a username and password; an identity token has neither.
      throw new WharfError(
        'WHARF_UPSTREAM_UNAUTHORIZED',
        `token server of upstream ${this.upstream} (${url.host}) takes no OAuth2 identity token`,
        {
          hint: 'this token server takes only a username and password: run docker login for ' +
            `this registry with them, or configure credentials for ${this.upstream}`,
        },
      );
    }
    if (status === 401 || status === 403 || (identityToken && refusedGrant(status, text))) {
      const what =
        identityToken ? 'the identity token' : creds ? 'the credentials' : 'anonymous access';
      throw new WharfError(
        'WHARF_UPSTREAM_UNAUTHORIZED',
        `token server of upstream ${this.upstream} refused ${what}`,
        {
          hint: identityToken
            ? RELOGIN_HINT
            : creds
              ? 'check the username and password configured for this upstream'
              : `configure credentials for ${this.upstream} ` +
                '(config file, environment or docker login)',
        },
      );
    }
    if (status >= 300) {
      throw new WharfError(
        status === 429 ? 'WHARF_UPSTREAM_TOO_MANY_REQUESTS' : 'WHARF_UPSTREAM_UNAVAILABLE',
        `token server of upstream ${this.upstream} answered ${status}`,
      );
    }

    let body: { token?: string; access_token?: string; expires_in?: number; issued_at?: string };
    try {
      body = JSON.parse(text) as typeof body;
    } catch {
      throw new WharfError(
        'WHARF_UPSTREAM_PROTOCOL', `token server of upstream ${this.upstream} sent no JSON`);
    }
    // The GET flow answers `token` (and often `access_token` too), OAuth2 only `access_token`.
    // A `refresh_token` in an OAuth2 answer comes only with access_type=offline, never asked.
    const token = body.token ?? body.access_token;
    if (!token) {
      throw new WharfError(
        'WHARF_UPSTREAM_PROTOCOL', `token server of upstream ${this.upstream} sent no token`);
    }
    const seconds =
      body.expires_in && body.expires_in > 0 ? body.expires_in : DEFAULT_TOKEN_SECONDS;
    this.tokens.set(scope, { token, expiresAt: Date.now() + seconds * 1000 - EXPIRY_MARGIN_MS });
    this.logger.debug({ upstream: this.upstream, scope, seconds }, 'token issued');
    return token;
  }

  private realmOf(challenge: Challenge): URL {
    try {
      return new URL(challenge.params.realm!);
    } catch {
      throw new WharfError(
        'WHARF_UPSTREAM_PROTOCOL', `upstream ${this.upstream} named a bad token realm`);
    }
  }

  /** distribution's token GET: service and scope in the query, basic auth when there is some. */
  private classicRequest(
    realm: URL,
    challenge: Challenge,
    scope: string,
    creds: Credentials | undefined,
  ): TokenRequest {
    const url = new URL(realm);
    if (challenge.params.service) url.searchParams.set('service', challenge.params.service);
    url.searchParams.set('scope', scope);
    const headers: Record<string, string> = {};
    if (creds) headers.authorization = basicHeader(creds);
    return { url, method: 'GET', headers };
  }

  /** distribution's OAuth2 POST: the identity token traded as a refresh token (RFC 6749 §6). */
  private refreshGrant(
    realm: URL,
    challenge: Challenge,
    scope: string,
    refreshToken: string,
  ): TokenRequest {
    const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: refreshToken });
    if (challenge.params.service) form.set('service', challenge.params.service);
    form.set('client_id', OAUTH_CLIENT_ID);
    // OAuth2 joins scopes with spaces; the GET flow repeats `scope` instead.
    form.set('scope', scope.split(' ').filter(Boolean).join(' '));
    return {
      url: realm,
      method: 'POST',
      headers: { 'content-type': 'application/x-www-form-urlencoded' },
      body: form.toString(),
    };
  }

  private async askTokenServer(realm: URL, req: TokenRequest) {
    let res: Dispatcher.ResponseData;
    try {
      res = await request(req.url, {
        method: req.method,
        headers: req.headers,
        body: req.body,
        dispatcher: this.dispatcher,
      });
    } catch (err) {
      throw new WharfError(
        'WHARF_UPSTREAM_UNAVAILABLE',
        `token server of upstream ${this.upstream} (${realm.host}) is unreachable`,
        {
          cause: err,
          hint: 'check that the registry\'s token service is reachable from the mirror',
        },
      );
    }
    try {
      return { status: res.statusCode, text: await res.body.text() };
    } catch (err) {
      throw new WharfError(
        'WHARF_UPSTREAM_UNAVAILABLE',
        `token server of upstream ${this.upstream} (${realm.host}) broke off its answer`,
        { cause: err },
      );
    }
  }
}

interface TokenRequest {
  url: URL;
  method: 'GET' | 'POST';
  headers: Record<string, string>;
  body?: string;
}

/**
 * OAuth2 token servers answer a bad refresh token with 400 `invalid_grant` (RFC 6749 §5.2)
 * rather than 401: that is a refusal of the token, not a broken request.
 */
function refusedGrant(status: number, text: string): boolean {
  if (status !== 400) return false;
  try {
    const { error } = JSON.parse(text) as { error?: unknown };
    return ['invalid_grant', 'invalid_client', 'unauthorized_client'].includes(String(error));
  } catch {
    return false;
  }
}
