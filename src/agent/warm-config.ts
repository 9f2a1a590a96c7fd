import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { Cron } from 'croner';
import { z } from 'zod';
import { WharfError, toWharfError } from '../errors.js';
import { parsePlatform, type PlatformSpec } from '../oci/platform.js';
import { formatImageRef, parseImageRef, type ImageRef } from '../oci/reference.js';
import { parseDuration, parseSize } from '../util/units.js';
import { readYamlFile, validateDocument } from '../util/yaml-file.js';
import { parseMirrorUrl } from './sources.js';

/** Every default of `wharf warm`, with its unit, in one place. */
export const WARM_DEFAULTS = {
  concurrency: 2,
  /** Attempts after the first, per image and cycle. */
  retries: 3,
  /** First wait before a retry; doubled for each one after. */
  backoff: '10s',
  /** All attempts for one image in one cycle. */
  deadline: '30m',
  stallTimeout: '60s',
  /** How often tags are polled when images come as arguments and nothing says when to run. */
  watch: '5m',
} as const;

const duration = z.union([z.string(), z.number()]);
const size = z.union([z.string(), z.number()]);

const imageSchema = z.union([
  z.string(),
  z.strictObject({
    image: z.string(),
    platform: z.string().optional(),
    keep: z.number().int().min(1).optional(),
  }),
]);

const fileSchema = z.strictObject({
  mirror: z.string().optional(),
  engine: z.string().optional(),
  /** Cron expression: when a full cycle runs. */
  schedule: z.string().optional(),
  /** How often tags are polled for a new digest. */
  watch: duration.optional(),
  concurrency: z.number().int().min(1).max(64).optional(),
  retries: z.number().int().min(0).max(100).optional(),
  backoff: duration.optional(),
  deadline: duration.optional(),
  stallTimeout: duration.optional(),
  allowStale: z.boolean().optional(),
  /** Versions per listed repository that stay; older ones are removed. */
  keep: z.number().int().min(1).optional(),
  /** Remove images not in the list that nothing used for this long. */
  removeUnusedAfter: duration.optional(),
  /** Below this much free disk, prune before pulling. */
  minFreeDisk: size.optional(),
  /** The file system to watch for minFreeDisk; the engine's data root by default. */
  diskPath: z.string().optional(),
  /** Where wharf records when it pulled and last saw an image used. */
  state: z.string().optional(),
  images: z.array(imageSchema).optional(),
});

export type WarmFile = z.infer<typeof fileSchema>;

export interface WarmImage {
  ref: ImageRef;
  /** `registry/repository:tag`, as reports show it. */
  name: string;
  platform?: PlatformSpec;
  keep?: number;
}

export interface WarmConfig {
  mirror?: URL;
  engine?: string;
  schedule?: string;
  watchMs?: number;
  concurrency: number;
  retries: number;
  backoffMs: number;
  deadlineMs: number;
  stallMs: number;
  allowStale: boolean;
  keep?: number;
  removeUnusedAfterMs?: number;
  minFreeDiskBytes?: number;
  diskPath?: string;
  statePath: string;
  images: WarmImage[];
}

export interface WarmFlags {
  config?: string;
  mirror?: string;
  engine?: string;
}

function invalid(option: string, why: string, hint?: string): WharfError {
  return new WharfError('WHARF_CONFIG_INVALID', `${option}: ${why}`, { hint });
}

/** Checks a parsed YAML document; the error names the exact key, e.g. `images.2.keep`. */
export function validateWarmFile(doc: unknown, source: string): WarmFile {
  return validateDocument(fileSchema, doc, source,
    'remove it or check its spelling; `wharf warm --help` lists the keys');
}

async function readWarmFile(path: string): Promise<WarmFile> {
  return validateWarmFile(await readYamlFile(path), path);
}

/** Runs a check and turns its failure into a config error naming `option`. */
function checked<T>(option: string, fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const e = toWharfError(err);
    const message = e.message.startsWith(option) ? e.message : `${option}: ${e.message}`;
    throw new WharfError('WHARF_CONFIG_INVALID', message, { hint: e.hint, cause: e });
  }
}

function image(entry: z.infer<typeof imageSchema>, option: string): WarmImage {
  const text = typeof entry === 'string' ? entry : entry.image;
  const ref = checked(option, () => parseImageRef(text));
  const out: WarmImage = { ref, name: formatImageRef(ref) };
  if (typeof entry !== 'string') {
    if (entry.platform) {
      const platform = entry.platform;
      out.platform = checked(`${option}.platform`, () => parsePlatform(platform, 'platform'));
    }
    if (entry.keep !== undefined) out.keep = entry.keep;
  }
  return out;
}

/** Where the state file goes when the config does not say: the user's state folder. */
export function defaultStatePath(env: NodeJS.ProcessEnv = process.env): string {
  if (process.platform === 'win32') {
    const local = env.LOCALAPPDATA ?? join(homedir(), 'AppData', 'Local');
    return join(local, 'wharf', 'warm-state.json');
  }
  const state = env.XDG_STATE_HOME ?? join(homedir(), '.local', 'state');
  return join(state, 'wharf', 'warm-state.json');
}

/** Builds the warm configuration: defaults, then the file, then flags and image arguments. */
export async function loadWarmConfig(
  flags: WarmFlags,
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<WarmConfig> {
  const file = flags.config ? await readWarmFile(flags.config) : {};
  const src = flags.config ?? 'config';
  const base = flags.config ? dirname(resolve(flags.config)) : process.cwd();
  const opt = (key: string) => `${src}: ${key}`;

  const images = [
    ...(file.images ?? []).map((e, i) => image(e, opt(`images.${i}`))),
    ...args.map((a) => image(a, `argument ${JSON.stringify(a)}`)),
  ];
  if (images.length === 0) {
    throw new WharfError('WHARF_BAD_USAGE', 'no images to warm', {
      hint: 'list them under images: in the file given to --config, or as arguments',
    });
  }

  const mirrorText = flags.mirror ?? file.mirror ?? env.WHARF_MIRROR;
  const config: WarmConfig = {
    concurrency: file.concurrency ?? WARM_DEFAULTS.concurrency,
    retries: file.retries ?? WARM_DEFAULTS.retries,
    backoffMs: parseDuration(file.backoff ?? WARM_DEFAULTS.backoff, opt('backoff')),
    deadlineMs: parseDuration(file.deadline ?? WARM_DEFAULTS.deadline, opt('deadline')),
    stallMs: parseDuration(file.stallTimeout ?? WARM_DEFAULTS.stallTimeout, opt('stallTimeout')),
    allowStale: file.allowStale ?? false,
    statePath: file.state ? resolve(base, file.state) : defaultStatePath(env),
    images,
  };
  if (mirrorText) {
    const option = flags.mirror ? '--mirror' : file.mirror ? opt('mirror') : 'WHARF_MIRROR';
    config.mirror = checked(option, () => parseMirrorUrl(mirrorText, option));
  }
  const engine = flags.engine ?? file.engine;
  if (engine) config.engine = engine;
  if (file.schedule) {
    const schedule = file.schedule;
    checked(opt('schedule'), () => new Cron(schedule, { paused: true }).stop());
    config.schedule = schedule;
  }
  if (file.watch !== undefined) {
    config.watchMs = parseDuration(file.watch, opt('watch'));
    if (config.watchMs < 1000) throw invalid(opt('watch'), 'must be at least 1s');
  }
  if (file.keep !== undefined) config.keep = file.keep;
  if (file.removeUnusedAfter !== undefined) {
    config.removeUnusedAfterMs = parseDuration(file.removeUnusedAfter, opt('removeUnusedAfter'));
  }
  if (file.minFreeDisk !== undefined) {
    config.minFreeDiskBytes = parseSize(file.minFreeDisk, opt('minFreeDisk'));
  }
  if (file.diskPath) config.diskPath = resolve(base, file.diskPath);
  return config;
}
