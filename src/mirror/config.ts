import { stat } from 'node:fs/promises';
import { resolve } from 'node:path';
import { z } from 'zod';
import { WharfError } from '../errors.js';
import { parseDuration, parseSize } from '../util/units.js';
import { redactUserinfo } from '../util/redact.js';
import { readYamlFile, validateDocument } from '../util/yaml-file.js';

/** Every default of the mirror, with its unit, in one place. */
export const DEFAULTS = {
  listen: '127.0.0.1:5000',
  data: './wharf-data',
  tagTtl: '60s',
  upstreamTimeout: '15s',
  /** Longest silence in a blob body from an upstream before the fetch is abandoned. */
  upstreamBodyTimeout: '60s',
  logLevel: 'info',
  /** No size budget unless one is set; the free-disk floor still protects the filesystem. */
  maxSize: undefined,
  minFreeDisk: '2GB',
  /** Eviction, once over the budget, goes down to this share of it, so it does not run on
   * every new blob. */
  lowWater: 0.9,
  /** How often the free-disk floor is checked. */
  diskCheckInterval: '30s',
} as const;

/** pino's levels, from the most verbose to `silent`, which turns logging off. */
export const LOG_LEVELS = ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent'] as const;

export type LogLevel = (typeof LOG_LEVELS)[number];

/** With no upstream configured, the public registries, docker.io first and default. */
export const PUBLIC_UPSTREAMS: UpstreamConfig[] = [
  { name: 'docker.io', url: 'https://registry-1.docker.io', default: true },
  { name: 'ghcr.io', url: 'https://ghcr.io', default: false },
  { name: 'quay.io', url: 'https://quay.io', default: false },
  { name: 'mcr.microsoft.com', url: 'https://mcr.microsoft.com', default: false },
  { name: 'registry.k8s.io', url: 'https://registry.k8s.io', default: false },
];

export interface UpstreamConfig {
  name: string;
  url: string;
  default: boolean;
  credentials?: { username: string; password: string };
}

export interface PinSpec {
  image: string;
  /** `os/arch[/variant]` entries of an index to keep; all of them when absent. */
  platforms?: string[];
}

export interface CacheConfig {
  maxSizeBytes: number | undefined;
  minFreeDiskBytes: number;
  lowWater: number;
  diskCheckIntervalMs: number;
  pins: PinSpec[];
}

export interface MirrorConfig {
  listen: { host: string; port: number };
  data: string;
  tagTtlMs: number;
  upstreamTimeoutMs: number;
  upstreamBodyTimeoutMs: number;
  logLevel: LogLevel;
  upstreams: UpstreamConfig[];
  cache: CacheConfig;
}

const duration = z.union([z.string(), z.number()]);

const upstreamSchema = z.strictObject({
  url: z.string(),
  name: z.string().optional(),
  default: z.boolean().optional(),
  username: z.string().optional(),
  password: z.string().optional(),
  /** Name of an environment variable holding the password, to keep it out of the file. */
  passwordEnv: z.string().optional(),
});

const fileSchema = z.strictObject({
  listen: z.string().optional(),
  data: z.string().optional(),
  tagTtl: duration.optional(),
  upstreamTimeout: duration.optional(),
  upstreamBodyTimeout: duration.optional(),
  // Checked with the flag's value by parseLogLevel, so both get the same error.
  logLevel: z.string().optional(),
  upstreams: z.array(upstreamSchema).optional(),
  cache: z
    .strictObject({
      maxSize: z.union([z.string(), z.number()]).optional(),
      minFreeDisk: z.union([z.string(), z.number()]).optional(),
      pin: z
        .array(
          z.union([
            z.string(),
            z.strictObject({ image: z.string(), platforms: z.array(z.string()).optional() }),
          ]),
        )
        .optional(),
    })
    .optional(),
});

export type MirrorFile = z.infer<typeof fileSchema>;

/** Flags of `wharf serve`; each overrides the file's value of the same name. */
export interface ServeFlags {
  config?: string;
  listen?: string;
  data?: string;
  upstream?: string[];
  logLevel?: string;
  maxSize?: string;
}

function invalid(option: string, why: string, hint?: string): WharfError {
  return new WharfError('WHARF_CONFIG_INVALID', `${option}: ${why}`, { hint });
}

/** An upstream's default NAME: its host, with `:` made `_` when the URL has a port. */
export function defaultName(url: URL): string {
  return url.port ? `${url.hostname}_${url.port}` : url.hostname;
}

export function parseListen(value: string, option = 'listen'): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]+)):([0-9]{1,5})$/.exec(value);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) {
    throw invalid(option, `expected HOST:PORT, got ${JSON.stringify(value)}`, 'e.g. 0.0.0.0:5000');
  }
  return { host: m[1] ?? m[2]!, port };
}

/**
 * Where an upstream entry came from, for its errors: a file entry names the key
 * (`mirror.yaml: upstreams.0.url`), a flag names itself with the value as given.
 */
interface UpstreamSource {
  at(key: string): string;
  /** The value is part of what `at` names: a flag's. */
  showsValue: boolean;
}

const NAME_RULE =
  'a name is lowercase letters and digits, joined by single dots, dashes or underscores';

function parseUpstream(
  entry: z.infer<typeof upstreamSchema>,
  source: UpstreamSource,
  env: NodeJS.ProcessEnv,
): UpstreamConfig {
  const url = parseUpstreamUrl(entry.url, source);
  const name = entry.name ?? defaultName(url);
  if (!/^[a-z0-9]+(?:[._-][a-z0-9]+)*$/.test(name)) {
    const hint = entry.name === undefined
      ? 'give the upstream a name of its own: NAME=URL on the flag, name: in the file'
      : 'e.g. corp or registry.example.io';
    const why = `invalid upstream name ${JSON.stringify(name)}: ${NAME_RULE}`;
    throw invalid(source.at('name'), why, hint);
  }
  const password = upstreamPassword(entry, source, env);
  if ((entry.username === undefined) !== (password === undefined)) {
    throw invalid(source.at('username'), 'username and password go together');
  }
  const out: UpstreamConfig = { name, url: url.origin, default: entry.default ?? false };
  if (entry.username !== undefined && password !== undefined) {
    out.credentials = { username: entry.username, password };
  }
  return out;
}

function parseUpstreamUrl(value: string, source: UpstreamSource): URL {
  const option = source.at('url');
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    const shown = source.showsValue ? '' : `: ${JSON.stringify(redactUserinfo(value))}`;
    throw invalid(option, `not a URL${shown}`, 'e.g. https://registry.example.io');
  }
  if (url.protocol !== 'https:' && url.protocol !== 'http:') {
    throw invalid(option, `must be http or https, got ${url.protocol}`);
  }
  if (url.username || url.password) {
    // Credentials in a URL end up in logs and errors; they have their own fields.
    throw invalid(option, 'must not contain credentials',
      'use username and password (or passwordEnv)');
  }
  if (url.pathname !== '/' || url.search || url.hash) {
    throw invalid(option, 'must be the registry root, without a path',
      'e.g. https://registry.example.io');
  }
  return url;
}

function upstreamPassword(
  entry: z.infer<typeof upstreamSchema>,
  source: UpstreamSource,
  env: NodeJS.ProcessEnv,
): string | undefined {
  if (entry.password !== undefined && entry.passwordEnv !== undefined) {
    throw invalid(source.at('passwordEnv'), 'password and passwordEnv are both set',
      'use one of them: passwordEnv keeps the password out of the file');
  }
  if (entry.passwordEnv === undefined) return entry.password;
  const password = env[entry.passwordEnv];
  if (password === undefined) {
    throw invalid(source.at('passwordEnv'), `environment variable ${entry.passwordEnv} is not set`);
  }
  return password;
}

/** `--upstream [NAME=]URL` */
function parseUpstreamFlag(value: string, env: NodeJS.ProcessEnv): UpstreamConfig {
  // An `=` before any `://` ends the NAME; a URL's own `=` (in a query) comes after it.
  const eq = value.indexOf('=');
  const scheme = value.indexOf('://');
  const named = eq > 0 && (scheme < 0 || eq < scheme);
  const entry = named ? { name: value.slice(0, eq), url: value.slice(eq + 1) } : { url: value };
  // The flag's value is named in errors, so credentials wrongly put in it are blanked first.
  const shown = `--upstream ${redactUserinfo(value)}`;
  return parseUpstream(entry, { at: () => shown, showsValue: true }, env);
}

function fileUpstream(src: string, i: number): UpstreamSource {
  return { at: (key) => `${src}: upstreams.${i}.${key}`, showsValue: false };
}

/** pino throws a bare internal error for an unknown level; refused here, naming the option. */
function parseLogLevel(value: string, option: string): LogLevel {
  const level = LOG_LEVELS.find((l) => l === value);
  if (level === undefined) {
    throw invalid(option, `unknown log level ${JSON.stringify(value)}`,
      `use one of ${LOG_LEVELS.join(', ')}`);
  }
  return level;
}

function finishUpstreams(upstreams: UpstreamConfig[], option: string): UpstreamConfig[] {
  const names = new Set<string>();
  for (const u of upstreams) {
    if (names.has(u.name)) throw invalid(option, `upstream name ${u.name} is used twice`);
    names.add(u.name);
  }
  const defaults = upstreams.filter((u) => u.default);
  if (defaults.length > 1) {
    throw invalid(option, `only one upstream can be the default (${defaults.map((u) => u.name).join(', ')})`);
  }
  return upstreams;
}

export async function readConfigFile(path: string): Promise<MirrorFile> {
  return validateFile(await readYamlFile(path), path);
}

export function validateFile(doc: unknown, source: string): MirrorFile {
  return validateDocument(fileSchema, doc, source,
    'remove it or check its spelling; the README lists the keys');
}

/** Builds the mirror's configuration: defaults, then the file, then the flags. */
export async function loadMirrorConfig(
  flags: ServeFlags,
  env: NodeJS.ProcessEnv = process.env,
): Promise<MirrorConfig> {
  const file = flags.config ? await readConfigFile(flags.config) : {};
  const src = flags.config ?? 'config';

  let upstreams: UpstreamConfig[];
  if (flags.upstream?.length) {
    upstreams = flags.upstream.map((u) => parseUpstreamFlag(u, env));
  } else if (file.upstreams?.length) {
    upstreams = file.upstreams.map((u, i) => parseUpstream(u, fileUpstream(src, i), env));
  } else {
    upstreams = PUBLIC_UPSTREAMS.map((u) => ({ ...u }));
  }

  const inFile = (key: string) => `${src}: ${key}`;
  return {
    listen: parseListen(
      flags.listen ?? file.listen ?? DEFAULTS.listen,
      flags.listen ? '--listen' : inFile('listen'),
    ),
    data: await dataFolder(
      flags.data ?? file.data ?? DEFAULTS.data,
      flags.data ? '--data' : inFile('data'),
    ),
    tagTtlMs: parseDuration(file.tagTtl ?? DEFAULTS.tagTtl, inFile('tagTtl')),
    upstreamTimeoutMs: parseDuration(
      file.upstreamTimeout ?? DEFAULTS.upstreamTimeout,
      inFile('upstreamTimeout'),
    ),
    upstreamBodyTimeoutMs: parseDuration(
      file.upstreamBodyTimeout ?? DEFAULTS.upstreamBodyTimeout,
      inFile('upstreamBodyTimeout'),
    ),
    logLevel: parseLogLevel(
      flags.logLevel ?? file.logLevel ?? DEFAULTS.logLevel,
      flags.logLevel ? '--log-level' : inFile('logLevel'),
    ),
    upstreams: finishUpstreams(
      upstreams,
      flags.upstream?.length ? '--upstream' : inFile('upstreams'),
    ),
    cache: cacheConfig(flags, file, src),
  };
}

/**
 * The data folder as an absolute path. A path that exists as something else (a file, or a
 * file where a parent folder should be) is refused here, naming the option; a missing
 * folder is fine: the mirror creates it.
 */
async function dataFolder(path: string, option: string): Promise<string> {
  const full = resolve(path);
  let isFolder = false;
  try {
    isFolder = (await stat(full)).isDirectory();
  } catch (err) {
    // ENOTDIR: a file stands where a parent folder should be. Anything else (missing, no
    // permission) is for the mirror to create or report when it opens the store.
    if ((err as NodeJS.ErrnoException).code !== 'ENOTDIR') return full;
  }
  if (!isFolder) {
    throw invalid(option, `${full} is not a folder`,
      'give the path of a folder (it is created if missing), not of a file');
  }
  return full;
}

function cacheConfig(flags: ServeFlags, file: MirrorFile, src: string): CacheConfig {
  const maxSize = flags.maxSize ?? file.cache?.maxSize;
  const pins = (file.cache?.pin ?? []).map((p) => (typeof p === 'string' ? { image: p } : p));
  return {
    maxSizeBytes:
      maxSize === undefined
        ? undefined
        : parseSize(maxSize, flags.maxSize ? '--max-size' : `${src}: cache.maxSize`),
    minFreeDiskBytes: parseSize(file.cache?.minFreeDisk ?? DEFAULTS.minFreeDisk, `${src}: cache.minFreeDisk`),
    lowWater: DEFAULTS.lowWater,
    diskCheckIntervalMs: parseDuration(DEFAULTS.diskCheckInterval, 'diskCheckInterval'),
    pins,
  };
}
