import type { Command } from 'commander';
import { Agent } from 'undici';
import { Warmer } from '../agent/warm.js';
import { WARM_DEFAULTS, loadWarmConfig, type WarmConfig } from '../agent/warm-config.js';
import { WharfError, toWharfError } from '../errors.js';
import { createLogger } from '../log.js';
import { engineAddressFrom } from '../engine/address.js';
import { DockerEngine } from '../engine/client.js';
import { dockerConfigPath } from '../upstream/credentials.js';
import { parseDuration } from '../util/units.js';
import { runWithProcessIo, type CommandIo } from './process-io.js';
import { exitCodeFor } from './errors.js';
import { createReporter } from './reporter.js';

export interface WarmCliFlags {
  config?: string;
  once?: boolean;
  mirror?: string;
  engine?: string;
  json?: boolean;
}

const EXAMPLES = `
Examples:
  $ wharf warm --config /etc/wharf/warm.yml
  $ wharf warm registry.example.io/ci/build:2024   # follows its tag every ${WARM_DEFAULTS.watch}
  $ wharf warm --once --mirror http://mirror.internal:5000 registry.example.io/ci/build:2024
  $ wharf warm --config warm.yml --once --json      # from cron, a systemd timer or Task Scheduler

The config file (YAML):
  mirror: http://mirror.internal:5000      # optional; also --mirror or $WHARF_MIRROR
  engine: npipe:////./pipe/docker_engine   # optional; also --engine or $DOCKER_HOST
  schedule: "0 */4 * * *"                  # cron: when a full cycle runs
  watch: 5m                                # poll tags this often; pull as soon as one moves
  concurrency: 2                           # images warmed at once
  retries: 3                               # per image and cycle, waiting backoff, doubled
  backoff: 10s
  deadline: 30m                            # per image and cycle, all attempts included
  keep: 2                                  # versions per repository that stay
  removeUnusedAfter: 14d                   # remove unlisted images unused this long
  minFreeDisk: 40GB                        # below this, prune before pulling
  images:
    - registry.example.io/ci/build:2024
    - image: mcr.microsoft.com/windows/servercore:ltsc2022
      platform: windows/amd64
      keep: 1

Each cycle ends with a table: image, digest, action (present, pulled, pruned, failed),
seconds, size. With --once, one cycle runs and the exit status is 1 if any image failed;
without it, wharf warm runs until it gets SIGINT or SIGTERM (Ctrl-Break on Windows).
Images given as arguments, with no schedule: or watch: in a config, have their tags
watched every ${WARM_DEFAULTS.watch}.`;

/** Runs `wharf warm`; returns the exit status once done (with --once) or stopped. */
export async function runWarm(
  images: string[],
  flags: WarmCliFlags,
  io: CommandIo,
): Promise<number> {
  const reporter = createReporter({ json: Boolean(flags.json), stdout: io.stdout,
    stderr: io.stderr, stream: true });
  let config: WarmConfig;
  let engine: DockerEngine;
  try {
    config = await loadWarmConfig(flags, images, io.env);
    if (!flags.once && !config.schedule && !config.watchMs) {
      // `wharf warm IMAGE` is asked to keep IMAGE warm, which means following its tag; a
      // config file that names no schedule and no watch is more likely a mistake.
      if (images.length === 0) {
        throw new WharfError('WHARF_BAD_USAGE', 'nothing to wait for: no schedule and no watch',
          { hint: 'add schedule: or watch: to the config, or pass --once to run one cycle' });
      }
      config.watchMs = parseDuration(WARM_DEFAULTS.watch, 'watch');
    }
    engine = new DockerEngine(engineAddressFrom(config.engine, io.env));
  } catch (err) {
    const error = toWharfError(err);
    reporter.failed('wharf warm', error, 0);
    return exitCodeFor(error);
  }

  const logger = createLogger({ level: io.env.WHARF_LOG_LEVEL ?? 'warn',
    destination: reporter.logDestination() });
  const dispatcher = new Agent({ connect: { timeout: 10_000 }, headersTimeout: 30_000 });
  const warmer = new Warmer({
    config,
    engine,
    logger,
    dispatcher,
    dockerConfig: dockerConfigPath(io.env),
    onEvent: (e) => {
      reporter.event(e);
      if (e.type === 'cycle-end') reporter.cycle(e.report);
    },
  });
  const onAbort = () => void warmer.stop();
  io.signal?.addEventListener('abort', onAbort, { once: true });

  try {
    if (flags.once) {
      const report = await warmer.cycle('once');
      return report.failed > 0 ? 1 : 0;
    }
    await warmer.start();
    if (!io.signal) return 0;
    if (!io.signal.aborted) {
      const signal = io.signal;
      await new Promise((resolve) => signal.addEventListener('abort', resolve, { once: true }));
    }
    await warmer.stop();
    return 0;
  } catch (err) {
    if (warmer.stopped) return 0;
    const error = toWharfError(err);
    reporter.failed('wharf warm', error, 0);
    return exitCodeFor(error);
  } finally {
    io.signal?.removeEventListener('abort', onAbort);
    reporter.close();
    await Promise.allSettled([engine.close(), dispatcher.close()]);
  }
}

export function register(program: Command): void {
  program
    .command('warm')
    .description('keep the images a host needs on its container engine: pull ahead of the ' +
      'jobs, follow moving tags, prune old versions')
    .argument('[image...]', 'images to keep, in addition to the config file\'s (without ' +
      `--once or a schedule or watch, their tags are watched every ${WARM_DEFAULTS.watch})`)
    .option('--config <file>', 'warm config (YAML); see below')
    .option('--once', 'run one cycle and exit: 1 if any image failed (for cron, timers, ' +
      'Task Scheduler)')
    .option('--mirror <url>', 'wharf mirror to pull through (default: the config\'s, else ' +
      '$WHARF_MIRROR)')
    .option('--engine <address>', 'container engine: unix:///path, npipe:////./pipe/NAME or ' +
      'tcp://HOST:PORT (default: the config\'s, else $DOCKER_HOST, else the usual one)')
    .option('--json', 'print events and each cycle\'s table as JSON lines')
    .addHelpText('after', EXAMPLES)
    .action(async (images: string[], flags: WarmCliFlags) => {
      await runWithProcessIo((io) => runWarm(images, flags, io));
    });
}
