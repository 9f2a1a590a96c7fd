import { execFile } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { startProcess, startupError, type ProcessHandle } from './process.js';
import { freePort, makeTempDir } from './tmp.js';
import type { TokenServer } from './token-server.js';
import { waitUntil } from './wait.js';

const run = promisify(execFile);

export interface Credentials {
  user: string;
  password: string;
}

export type RegistryAuth = { htpasswd: Credentials } | { token: TokenServer };

export interface RegistryOptions {
  auth?: RegistryAuth;
  /**
   * Makes this a pull-through cache of that registry (distribution's proxy mode).
   * Its credentials only work against a token-auth remote: distribution 2.8 files them
   * under the token realm's URL, so a basic-auth remote never gets them.
   */
  proxyRemoteUrl?: string;
  proxyUsername?: string;
  proxyPassword?: string;
  /** distribution's log level (default "info", which logs every request). */
  logLevel?: 'error' | 'warn' | 'info' | 'debug';
}

export interface Registry {
  /** http://127.0.0.1:PORT */
  url: string;
  /** 127.0.0.1:PORT, for image references. */
  host: string;
  port: number;
  /** The temp folder: config.yml, data/, registry.log. */
  dir: string;
  process: ProcessHandle;
  logTail(lines?: number): Promise<string>;
  stop(): Promise<void>;
}

/**
 * Runs CNCF distribution 2.8 (`docker-registry serve`) on a free loopback port with
 * filesystem storage in its own temp folder, and waits until /v2/ answers.
 */
export async function startRegistry(options: RegistryOptions = {}): Promise<Registry> {
  const dir = await makeTempDir('registry');
  await mkdir(join(dir, 'data'));
  const auth = await authConfig(dir, options.auth);

  // The port is probed free and then bound by another program, so another process
  // can take it in between; a bind failure is retried with a new port.
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const configPath = join(dir, 'config.yml');
    await writeFile(configPath, JSON.stringify(config(dir, port, options, auth), null, 2));

    const proc = await startProcess({
      name: 'docker-registry',
      command: 'docker-registry',
      args: ['serve', configPath],
      logFile: join(dir, 'registry.log'),
      cwd: dir,
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitUntil(async () => {
        const res = await fetch(`${url}/v2/`);
        await res.arrayBuffer();
        return res.status === 200 || res.status === 401;
      }, {
        what: `docker-registry on ${url}`,
        timeoutMs: 20_000,
        abort: () => proc.exit() && new Error('exited'),
      });
    } catch (err) {
      const tail = await proc.logTail(40);
      await proc.stop();
      if (attempt < 3 && tail.includes('address already in use')) continue;
      throw await startupError(proc, `not ready: ${(err as Error).message}`);
    }

    return {
      url,
      host: `127.0.0.1:${port}`,
      port,
      dir,
      process: proc,
      logTail: (lines) => proc.logTail(lines),
      stop: async () => {
        await proc.stop();
      },
    };
  }
}

type AuthSection = Record<string, Record<string, string>> | undefined;

async function authConfig(dir: string, auth: RegistryAuth | undefined): Promise<AuthSection> {
  if (!auth) return undefined;
  if ('htpasswd' in auth) {
    // distribution only accepts bcrypt entries in its htpasswd file.
    const { user, password } = auth.htpasswd;
    const { stdout } = await run('htpasswd', ['-Bbn', user, password]);
    const path = join(dir, 'htpasswd');
    await writeFile(path, stdout.trim() + '\n');
    return { htpasswd: { realm: 'wharf-test', path } };
  }
  const token = auth.token;
  return {
    token: {
      realm: token.realm,
      service: token.service,
      issuer: token.issuer,
      rootcertbundle: token.rootCertBundle,
    },
  };
}

function config(dir: string, port: number, options: RegistryOptions, auth: AuthSection) {
  // YAML is a superset of JSON, so the config is written as JSON.
  return {
    version: 0.1,
    log: { level: options.logLevel ?? 'info', formatter: 'text' },
    storage: {
      filesystem: { rootdirectory: join(dir, 'data') },
      delete: { enabled: true },
      // Purging would delete uploads a slow test still has open.
      maintenance: { uploadpurging: { enabled: false } },
    },
    // No debug addr: it would need a second free port and nobody reads it.
    http: { addr: `127.0.0.1:${port}`, secret: randomBytes(16).toString('hex') },
    health: { storagedriver: { enabled: false } },
    // Without an allow list distribution refuses every manifest whose layers carry
    // `urls`, which Windows images with foreign layers all do.
    validation: { manifests: { urls: { allow: ['^https?://'] } } },
    ...(auth ? { auth } : {}),
    ...(options.proxyRemoteUrl
      ? {
        proxy: {
          remoteurl: options.proxyRemoteUrl,
          ...(options.proxyUsername ? { username: options.proxyUsername } : {}),
          ...(options.proxyPassword ? { password: options.proxyPassword } : {}),
        },
      }
      : {}),
  };
}
