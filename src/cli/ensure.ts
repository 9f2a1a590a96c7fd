import { performance } from 'node:perf_hooks';
import { setFlagsFromString } from 'node:v8';
import type { Command } from 'commander';
import { Agent } from 'undici';
import { ENSURE_DEFAULTS, ensureImage } from '../agent/ensure.js';
import { parseMirrorUrl } from '../agent/sources.js';
import { WharfError, isWharfError, toWharfError } from '../errors.js';
import { createLogger } from '../log.js';
import { engineAddressFrom } from '../engine/address.js';
import { DockerEngine } from '../engine/client.js';
import { parsePlatform, type PlatformSpec } from '../oci/platform.js';
import { formatImageRef, parseImageRef, type ImageRef } from '../oci/reference.js';
import { dockerConfigPath } from '../upstream/credentials.js';
import { parseDuration } from '../util/units.js';
import { exitCodeFor } from './errors.js';
import { runWithProcessIo, type CommandIo } from './process-io.js';
import { createReporter } from './reporter.js';

export interface EnsureFlags {
  mirror?: string;
  engine?: string;
  platform?: string;
  allowStale?: boolean;
  stallTimeout?: string;
  json?: boolean;
}

export type { CommandIo };

const EXAMPLES = `
Examples:
  $ wharf ensure registry.example.io/ci/build:2024 --mirror http://mirror.internal:5000
  $ wharf ensure mcr.microsoft.com/windows/servercore:ltsc2022 --json
  $ wharf ensure alpine:3.20 --platform linux/arm64 --allow-stale
  $ WHARF_MIRROR=http://mirror.internal:5000 wharf ensure ghcr.io/acme/tools:1.4

The image is checked by digest first and pulled only when it differs: through the mirror,
from the origin when the mirror fails. Exit status: 0 the image is present, 1 it could not
be made present, 2 bad usage.`;

/** An argument or flag that cannot be right, whatever the registries say: exit status 2. */
function usage(err: unknown): WharfError {
  const e = toWharfError(err);
  if (e.code === 'WHARF_BAD_USAGE') return e;
  return new WharfError('WHARF_BAD_USAGE', e.message, { hint: e.hint, cause: e });
}

interface Checked {
  image: ImageRef;
  mirror: URL | undefined;
  platform: PlatformSpec | undefined;
  stallMs: number;
}

function check(imageText: string, flags: EnsureFlags, env: NodeJS.ProcessEnv): Checked {
  try {
    const mirrorText = flags.mirror ?? env.WHARF_MIRROR;
    return {
      image: parseImageRef(imageText),
      mirror: mirrorText
        ? parseMirrorUrl(mirrorText, flags.mirror ? '--mirror' : 'WHARF_MIRROR')
        : undefined,
      platform: flags.platform ? parsePlatform(flags.platform) : undefined,
      stallMs: flags.stallTimeout
        ? parseDuration(flags.stallTimeout, '--stall-timeout')
        : ENSURE_DEFAULTS.stallMs,
    };
  } catch (err) {
    throw usage(err);
  }
}

/** Runs `wharf ensure`; returns the exit status. */
export async function runEnsure(
  imageText: string,
  flags: EnsureFlags,
  io: CommandIo,
): Promise<number> {
  const started = performance.now();
  const reporter = createReporter({ json: Boolean(flags.json), stdout: io.stdout,
    stderr: io.stderr });
  let checked: Checked;
  let engine: DockerEngine;
  try {
    checked = check(imageText, flags, io.env);
    engine = new DockerEngine(engineAddressFrom(flags.engine, io.env));
  } catch (err) {
    const error = toWharfError(err);
    reporter.failed(imageText, error, 0);
    return exitCodeFor(error);
  }

  const level = io.env.WHARF_LOG_LEVEL ?? 'silent';
  const logger = createLogger({ level, destination: reporter.logDestination() });
  const dispatcher = new Agent({ connect: { timeout: 10_000 }, headersTimeout: 30_000 });
  try {
    const result = await ensureImage(checked.image, {
      engine,
      mirror: checked.mirror,
      platform: checked.platform,
      allowStale: Boolean(flags.allowStale),
      stallMs: checked.stallMs,
      signal: io.signal,
      logger,
      dispatcher,
      onEvent: (e) => reporter.event(e),
      dockerConfig: dockerConfigPath(io.env),
    });
    reporter.ensured(result);
    return 0;
  } catch (err) {
    const error = toWharfError(err);
    const seconds = Math.round(performance.now() - started) / 1000;
    reporter.failed(formatImageRef(checked.image), error, seconds);
    return isWharfError(error, 'WHARF_BAD_USAGE') ? 2 : 1;
  } finally {
    reporter.close();
    await Promise.allSettled([engine.close(), dispatcher.close()]);
  }
}

export function register(program: Command): void {
  program
    .command('ensure')
    .description('make an image present on this host\'s container engine, pulling only what ' +
      'changed: through the mirror first, the origin as fallback')
    .argument('<image>', 'image reference: [registry/]repository[:tag][@sha256:...]')
    .option('--mirror <url>', 'wharf mirror to resolve and pull through (default: $WHARF_MIRROR)')
    .option('--engine <address>', 'container engine: unix:///path, npipe:////./pipe/NAME or ' +
      'tcp://HOST:PORT (default: $DOCKER_HOST, else the platform\'s socket or pipe)')
    .option('--platform <platform>', 'os/arch[/variant], or windows(10.0.BUILD)/amd64 for a ' +
      'Windows build (default: the engine\'s)')
    .option('--allow-stale', 'use the copy on the engine when neither mirror nor origin answers')
    .option('--stall-timeout <duration>', 'restart a pull whose downloads made no progress ' +
      'this long (extracting may take ten times as long)',
      `${ENSURE_DEFAULTS.stallMs / 1000}s`)
    .option('--json', 'print one JSON object instead of a line')
    .addHelpText('after', EXAMPLES)
    .action(async (image: string, flags: EnsureFlags) => {
      // ensure runs in every CI job, so its start and its end are on the clock. V8 compiles
      // undici's WebAssembly HTTP parser twice, the second time optimized, in the background,
      // and a Node process waits for that before it exits: ~150 ms that a process making
      // a handful of requests never gets back. Set before the first request compiles it.
      setFlagsFromString('--liftoff-only');
      await runWithProcessIo((io) => runEnsure(image, flags, io));
    });
}
