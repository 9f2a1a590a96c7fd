import { performance } from 'node:perf_hooks';
import { Cron } from 'croner';
import type { Dispatcher } from 'undici';
import { toWharfError } from '../errors.js';
import { silentLogger, type Logger } from '../log.js';
import type { Engine } from '../engine/types.js';
import { ensureImage } from './ensure.js';
import {
  summarize,
  type AgentEvent,
  type CycleReport,
  type CycleRow,
  type CycleTrigger,
  type EventSink,
} from './events.js';
import {
  Families,
  diskFloorCandidates,
  engineImages,
  freeBytes,
  oldVersions,
  unusedImages,
  type EngineImage,
  type Removal,
} from './prune.js';
import { resolveTag } from './resolve.js';
import { mapLimit, withRetries } from './retry.js';
import { sourcesFor } from './sources.js';
import { UsageState } from './usage-state.js';
import type { WarmConfig, WarmImage } from './warm-config.js';

export interface WarmerOptions {
  config: WarmConfig;
  engine: Engine;
  logger?: Logger;
  dispatcher?: Dispatcher;
  onEvent?: EventSink;
  dockerConfig?: string;
}

const seconds = (ms: number) => Math.round(ms / 100) / 10;

/**
 * Keeps a host's images warm: a cycle ensures every listed image, then prunes; a schedule
 * runs cycles, and a watch polls tags and runs a cycle for those that moved. Cycles never
 * overlap, and one image failing never stops the others.
 */
export class Warmer {
  private readonly config: WarmConfig;
  private readonly engine: Engine;
  private readonly logger: Logger;
  private readonly emit: EventSink;
  private readonly stopping = new AbortController();
  /** The digest each tag had when it was last ensured, for the watch. */
  private readonly known = new Map<string, string>();
  private readonly families: Families;
  private cycles = 0;
  private running: Promise<CycleReport> | undefined;
  private state: UsageState | undefined;
  private cron: Cron | undefined;
  private watchTimer: NodeJS.Timeout | undefined;

  constructor(private readonly options: WarmerOptions) {
    this.config = options.config;
    this.engine = options.engine;
    this.logger = options.logger ?? silentLogger();
    this.emit = (e: AgentEvent) => options.onEvent?.(e);
    this.families = new Families(this.config.images, this.config.mirror?.host, this.config.keep);
  }

  /**
   * Runs one cycle over `images` (all by default), waiting for one in progress to finish
   * first: a schedule and a watch may both ask for one.
   */
  async cycle(trigger: CycleTrigger, images = this.config.images): Promise<CycleReport> {
    while (this.running) await this.running.catch(() => undefined);
    this.running = this.runCycle(trigger, images);
    try {
      return await this.running;
    } finally {
      this.running = undefined;
    }
  }

  /** Runs a first cycle, then cycles on the schedule and the watch until `stop()`. */
  async start(): Promise<void> {
    if (this.config.schedule) {
      this.cron = new Cron(this.config.schedule, { protect: true }, async () => {
        await this.cycle('schedule').catch((err) => this.logger.error({ err }, 'cycle failed'));
      });
    }
    await this.cycle('start');
    if (this.config.watchMs) this.scheduleWatch();
  }

  /** Stops the schedule and the watch, and aborts the pulls in flight. */
  async stop(): Promise<void> {
    this.cron?.stop();
    clearTimeout(this.watchTimer);
    this.stopping.abort(new Error('wharf warm is stopping'));
    await this.running?.catch(() => undefined);
  }

  get stopped(): boolean {
    return this.stopping.signal.aborted;
  }

  private scheduleWatch(): void {
    if (this.stopped) return;
    this.watchTimer = setTimeout(() => {
      this.watchOnce()
        .catch((err) => this.logger.error({ err: toWharfError(err).message }, 'watch failed'))
        .finally(() => this.scheduleWatch());
    }, this.config.watchMs);
  }

  /**
   * Asks for every tag's digest (one HEAD each, through the mirror) and runs a cycle for the
   * images whose tag moved. A tag that cannot be resolved now is left for the next poll.
   */
  async watchOnce(): Promise<CycleReport | undefined> {
    if (this.running) return undefined;
    const moved: WarmImage[] = [];
    await mapLimit(this.config.images, this.config.concurrency * 2, async (image) => {
      if (!image.ref.tag || image.ref.digest) return;
      const sources = sourcesFor(image.ref, {
        mirror: this.config.mirror,
        logger: this.logger,
        dispatcher: this.options.dispatcher,
      });
      const resolved = await resolveTag(image.ref, sources, [], () => undefined);
      if (!resolved || resolved.digest === this.known.get(image.name)) return;
      this.emit({ type: 'tag-moved', image: image.name, from: this.known.get(image.name),
        to: resolved.digest });
      moved.push(image);
    });
    if (moved.length === 0 || this.stopped) return undefined;
    return this.cycle('watch', moved);
  }

  private async runCycle(trigger: CycleTrigger, images: WarmImage[]): Promise<CycleReport> {
    const started = performance.now();
    const cycle = ++this.cycles;
    this.state ??= await UsageState.load(this.config.statePath);
    this.emit({ type: 'cycle-start', cycle, images: images.length, trigger });

    const rows: CycleRow[] = [];
    rows.push(...(await this.pruneForDisk()));
    rows.push(...(await mapLimit(images, this.config.concurrency, (i) => this.warmOne(i))));
    if (!this.stopped) rows.push(...(await this.prune()));

    await this.state.save().catch((err) => {
      this.logger.warn({ err: toWharfError(err).message }, 'warm state not saved');
    });
    const report: CycleReport = {
      cycle,
      trigger,
      rows,
      failed: rows.filter((r) => r.action === 'failed').length,
      seconds: seconds(performance.now() - started),
    };
    this.emit({ type: 'cycle-end', report });
    return report;
  }

  private async warmOne(image: WarmImage): Promise<CycleRow> {
    const started = performance.now();
    try {
      const result = await withRetries(
        (signal) => ensureImage(image.ref, {
          engine: this.engine,
          mirror: this.config.mirror,
          platform: image.platform,
          allowStale: this.config.allowStale,
          stallMs: this.config.stallMs,
          signal,
          logger: this.logger,
          dispatcher: this.options.dispatcher,
          onEvent: this.emit,
          dockerConfig: this.options.dockerConfig,
        }),
        {
          retries: this.config.retries,
          backoffMs: this.config.backoffMs,
          deadlineMs: this.config.deadlineMs,
          signal: this.stopping.signal,
          what: `warming ${image.name}`,
          onRetry: (attempt, delayMs, err) => this.emit({ type: 'pull-retry', image: image.name,
            attempt, delayMs, error: summarize(err) }),
        },
      );
      if (result.source !== 'stale-local') this.known.set(image.name, result.digest);
      const pulled = result.source === 'mirror' || result.source === 'origin';
      if (pulled) this.state?.pulled(result.id);
      return {
        image: image.name,
        digest: result.digest,
        action: pulled ? 'pulled' : 'present',
        source: result.source,
        seconds: seconds(performance.now() - started),
        size: result.size,
        bytes: result.bytes,
      };
    } catch (err) {
      return this.failed(image.name, err, started);
    }
  }

  private failed(name: string, err: unknown, started: number): CycleRow {
    const error = summarize(toWharfError(err));
    this.emit({ type: 'image-failed', image: name, error });
    return {
      image: name,
      digest: '',
      action: 'failed',
      error,
      seconds: seconds(performance.now() - started),
      size: 0,
    };
  }

  private async snapshot() {
    const [images, containers] = await Promise.all([
      this.engine.listImages(),
      this.engine.listContainers(),
    ]);
    const list = engineImages(images, containers);
    const running = new Set(containers.filter((c) => c.State === 'running').map((c) => c.ImageID));
    this.state!.observe(list.map((i) => i.id), running);
    return list;
  }

  /** Old versions beyond `keep`, and unlisted images unused for `removeUnusedAfter`. */
  private async prune(): Promise<CycleRow[]> {
    const wantsKeep = this.config.images.some((i) => i.keep !== undefined) ||
      this.config.keep !== undefined;
    if (!wantsKeep && this.config.removeUnusedAfterMs === undefined) {
      await this.snapshot().catch(() => undefined);
      return [];
    }
    try {
      const images = await this.snapshot();
      const plan = oldVersions(images, this.families, this.state!);
      if (this.config.removeUnusedAfterMs !== undefined) {
        plan.push(...unusedImages(images, this.families, this.state!,
          this.config.removeUnusedAfterMs));
      }
      const rows: CycleRow[] = [];
      for (const r of plan) rows.push(...(await this.remove(r)));
      return rows;
    } catch (err) {
      this.logger.warn({ err: toWharfError(err).message }, 'prune failed');
      return [];
    }
  }

  /** Below the free-disk floor, removes what may go until the floor is met again. */
  private async pruneForDisk(): Promise<CycleRow[]> {
    const floor = this.config.minFreeDiskBytes;
    if (floor === undefined) return [];
    const path = this.config.diskPath ?? (await this.engine.info().catch(() => ({})) as {
      DockerRootDir?: string;
    }).DockerRootDir;
    const free = path ? await freeBytes(path) : undefined;
    if (path === undefined || free === undefined) {
      this.logger.warn({ path }, 'free disk cannot be read here; set diskPath in the warm config');
      return [];
    }
    if (free >= floor) return [];
    this.emit({ type: 'disk-low', path, free, floor });
    const started = performance.now();
    let images: EngineImage[];
    try {
      images = await this.snapshot();
    } catch (err) {
      // The images are still warmed: the floor is there to make room for them, and the cycle
      // should end in a table. A failed row says the floor was not kept, and --once exits 1.
      return [this.failed(`disk floor ${path}`, err, started)];
    }
    const rows: CycleRow[] = [];
    for (const r of diskFloorCandidates(images, this.families, this.state!)) {
      rows.push(...(await this.remove(r)));
      if (((await freeBytes(path)) ?? 0) >= floor) break;
    }
    return rows;
  }

  private async remove(r: Removal): Promise<CycleRow[]> {
    const started = performance.now();
    try {
      if (r.refs.length === 0) await this.engine.removeImage(r.id);
      for (const ref of r.refs) await this.engine.removeImage(ref);
    } catch (err) {
      // An image a container started using since the snapshot: the engine refuses, rightly.
      const error = toWharfError(err);
      this.emit({ type: 'remove-failed', image: r.name, id: r.id, error: summarize(error) });
      return [];
    }
    this.emit({ type: 'removed', image: r.name, id: r.id, reason: r.reason, bytes: r.size });
    return [{
      image: r.name,
      digest: r.digest,
      action: 'pruned',
      seconds: seconds(performance.now() - started),
      size: r.size,
    }];
  }
}
