import { spawn } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join } from 'node:path';

export interface Credentials {
  username: string;
  password: string;
}

/** Where an upstream's credentials came from, for logs: never the credentials themselves. */
export type CredentialOrigin = 'config' | 'env' | 'docker-config' | 'credential-helper';

export interface FoundCredentials extends Credentials {
  origin: CredentialOrigin;
  /**
   * An OAuth2 refresh token that stands in for the password (`password` is then ''): the
   * `identitytoken` that `docker login` stores for registries with an OAuth2 token endpoint,
   * or a credential helper's secret under the username `<token>`.
   */
  identityToken?: string;
}

/** The username docker credential helpers give with an identity token as the secret. */
const TOKEN_USERNAME = '<token>';

/** `registry.example.io:5000` -> `WHARF_REGISTRY_EXAMPLE_IO_5000` (then `_USERNAME`, `_PASSWORD`). */
export function envPrefix(name: string): string {
  return `WHARF_${name.toUpperCase().replace(/[^A-Z0-9]+/g, '_')}`;
}

export function credentialsFromEnv(
  name: string,
  env: NodeJS.ProcessEnv = process.env,
): FoundCredentials | undefined {
  const prefix = envPrefix(name);
  const username = env[`${prefix}_USERNAME`];
  const password = env[`${prefix}_PASSWORD`];
  if (username && password) return { username, password, origin: 'env' };
  return undefined;
}

interface DockerConfig {
  auths?: Record<string, {
    auth?: string;
    username?: string;
    password?: string;
    identitytoken?: string;
  }>;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

export function dockerConfigPath(env: NodeJS.ProcessEnv = process.env): string {
  return join(env.DOCKER_CONFIG ?? join(homedir(), '.docker'), 'config.json');
}

// Docker keeps Docker Hub's entry under its historical index URL, and other registries under
// the bare host or, in files written by older clients, a full URL.
function authKeys(host: string): string[] {
  if (host === 'docker.io' || host === 'registry-1.docker.io' || host === 'index.docker.io') {
    return ['https://index.docker.io/v1/', 'index.docker.io', 'docker.io', 'registry-1.docker.io'];
  }
  return [host, `https://${host}`, `http://${host}`, `https://${host}/v1/`];
}

async function readDockerConfig(path: string): Promise<DockerConfig | undefined> {
  try {
    return JSON.parse(await readFile(path, 'utf8')) as DockerConfig;
  } catch {
    return undefined;
  }
}

/** Asks a docker credential helper (`docker-credential-NAME get`), as the docker CLI does. */
function fromHelper(
  helper: string,
  server: string,
): Promise<Omit<FoundCredentials, 'origin'> | undefined> {
  return new Promise((resolve) => {
    const child = spawn(`docker-credential-${helper}`, ['get'], { stdio: ['pipe', 'pipe', 'ignore'] });
    let out = '';
    child.stdout.on('data', (chunk: Buffer) => (out += chunk.toString('utf8')));
    child.on('error', () => resolve(undefined));
    child.on('close', (code) => {
      if (code !== 0) return resolve(undefined);
      try {
        const parsed = JSON.parse(out) as { Username?: string; Secret?: string };
        if (parsed.Username === TOKEN_USERNAME && parsed.Secret) {
          resolve({ username: '', password: '', identityToken: parsed.Secret });
        } else if (parsed.Username && parsed.Secret) {
          resolve({ username: parsed.Username, password: parsed.Secret });
        } else resolve(undefined);
      } catch {
        resolve(undefined);
      }
    });
    child.stdin.end(server);
  });
}

/** Credentials for a registry host from the user's docker `config.json`, helpers included. */
export async function credentialsFromDockerConfig(
  host: string,
  path: string = dockerConfigPath(),
): Promise<FoundCredentials | undefined> {
  const config = await readDockerConfig(path);
  if (!config) return undefined;
  const keys = authKeys(host);

  const helper = keys.map((k) => config.credHelpers?.[k]).find(Boolean) ?? config.credsStore;
  if (helper) {
    for (const key of keys) {
      const found = await fromHelper(helper, key);
      if (found) return { ...found, origin: 'credential-helper' };
    }
  }

  for (const key of keys) {
    const entry = config.auths?.[key];
    if (!entry) continue;
    if (entry.identitytoken) {
      // `docker login` keeps the username beside the token (in `auth` as `user:`).
      const decoded = entry.auth ? Buffer.from(entry.auth, 'base64').toString('utf8') : '';
      const username = entry.username ?? decoded.slice(0, Math.max(decoded.indexOf(':'), 0));
      return { username, password: '', identityToken: entry.identitytoken,
        origin: 'docker-config' };
    }
    if (entry.username && entry.password) {
      return { username: entry.username, password: entry.password, origin: 'docker-config' };
    }
    if (entry.auth) {
      const decoded = Buffer.from(entry.auth, 'base64').toString('utf8');
      const colon = decoded.indexOf(':');
      if (colon > 0) {
        return {
          username: decoded.slice(0, colon),
          password: decoded.slice(colon + 1),
          origin: 'docker-config',
        };
      }
    }
  }
  return undefined;
}

/**
 * Credentials for one upstream, first found wins: the config file, then environment variables,
 * then the docker `config.json` of the user running wharf.
 *
 * Credentials found there may carry an identity token instead of a password: the
 * Authenticator trades it for bearer tokens with the OAuth2 `refresh_token` grant, and never
 * sends it as basic auth.
 */
export async function resolveCredentials(
  name: string,
  host: string,
  configured: Credentials | undefined,
): Promise<FoundCredentials | undefined> {
  if (configured) return { ...configured, origin: 'config' };
  return credentialsFromEnv(name) ?? (await credentialsFromDockerConfig(host));
}
