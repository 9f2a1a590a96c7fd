import { Writable } from 'node:stream';
import cliProgress from 'cli-progress';
import { formatTable } from './table.js';
import type { WharfError } from '../errors.js';
import {
  summarize,
  type AgentEvent,
  type CycleReport,
  type EnsureResult,
} from '../agent/events.js';
import { formatBytes } from '../util/units.js';

/**
 * Prints what the agent did. Core code only returns results and emits events; this is the one
 * place that decides how they look: bars or lines for people, JSON for scripts.
 */
export interface Reporter {
  event(event: AgentEvent): void;
  ensured(result: EnsureResult): void;
  failed(image: string, err: WharfError, seconds: number): void;
  cycle(report: CycleReport): void;
  /** Where the command's pino logger writes, so its lines take the reporter's form. */
  logDestination(): NodeJS.WritableStream;
  close(): void;
}

export interface ReporterOptions {
  json: boolean;
  /** Results: the ensure line, the cycle table, JSON. */
  stdout: NodeJS.WritableStream;
  /** Progress and warnings. */
  stderr: NodeJS.WritableStream & { isTTY?: boolean };
  /** Bars instead of lines; by default when stderr is a terminal. */
  bars?: boolean;
  /**
   * `warm` reports each image as it is done (a JSON event each); `ensure` reports one result
   * at the end.
   */
  stream?: boolean;
  /** Without bars, how often a pull in progress gets a line, ms. */
  progressLineMs?: number;
}

/** Defaults of the reporters, in one place with their units. */
export const REPORTER_DEFAULTS = {
  /** In a log, one line this often per image says a pull is alive without flooding, ms. */
  progressLineMs: 10_000,
};

export function createReporter(options: ReporterOptions): Reporter {
  return options.json ? new JsonReporter(options) : new HumanReporter(options);
}

const short = (digest: string) => (digest.length > 19 ? `${digest.slice(0, 19)}…` : digest);

/**
 * `wharf ensure`'s line: what, which digest, from where, how long. Where it came from is said
 * with the word `--json` puts in `source`, so a log and a script read the same outcome.
 */
export function ensureLine(r: EnsureResult): string {
  const what = `${r.image} ${short(r.digest)}`;
  const platform = r.platform ? ` [${r.platform}]` : '';
  if (r.source === 'local') return `${what}${platform} local in ${r.seconds.toFixed(2)} s`;
  if (r.source === 'stale-local') {
    const why = r.stale?.message ?? 'no registry answered';
    return `${what}${platform} stale-local: kept the engine's copy (${why})`;
  }
  // The engine reports no bytes for layers it had already; "(0 B)" would read as a failure.
  const bytes = r.bytes > 0 ? ` (${formatBytes(r.bytes)})` : '';
  return `${what}${platform} pulled from ${r.source} in ${r.seconds.toFixed(2)} s${bytes}`;
}

const LOG_LEVELS: Record<number, string> = {
  10: 'trace', 20: 'debug', 30: 'info', 40: 'warning', 50: 'error', 60: 'fatal',
};

/** A pino line as a person reads it: `warning: prune failed (err: ...)`. */
export function plainLogLine(line: string): string {
  let entry: Record<string, unknown>;
  try {
    entry = JSON.parse(line) as Record<string, unknown>;
  } catch {
    return line;
  }
  const { level, time: _time, msg, ...data } = entry;
  const fields = Object.entries(data).map(([key, value]) => `${key}: ${plainValue(value)}`);
  const label = LOG_LEVELS[level as number] ?? 'log';
  return `${label}: ${String(msg)}` + (fields.length > 0 ? ` (${fields.join(', ')})` : '');
}

function plainValue(value: unknown): string {
  if (typeof value === 'string') return value;
  // pino serializes an Error with its stack; a log line wants the message.
  if (value && typeof value === 'object' && 'message' in value) return String(value.message);
  return JSON.stringify(value);
}

export function cycleTable(report: CycleReport): string {
  const header = ['IMAGE', 'DIGEST', 'ACTION', 'SECONDS', 'SIZE'];
  const rows = report.rows.map((row) => [
    row.image,
    row.digest ? short(row.digest) : '-',
    row.action === 'pulled' && row.source ? `pulled (${row.source})` : row.action,
    row.seconds.toFixed(1),
    row.size > 0 ? formatBytes(row.size) : '-',
  ]);
  const failures = report.rows
    .filter((r) => r.error)
    .map((r) => `  ${r.image}: ${r.error!.message} [${r.error!.code}]` +
      (r.error!.hint ? `\n    hint: ${r.error!.hint}` : ''));
  const summary = `cycle ${report.cycle} (${report.trigger}): ${report.rows.length} rows, ` +
    `${report.failed} failed, ${report.seconds.toFixed(1)} s`;
  return formatTable(header, rows) + [summary, ...failures].join('\n') + '\n';
}

class HumanReporter implements Reporter {
  private readonly multi: cliProgress.MultiBar | undefined;
  private readonly bars = new Map<string, cliProgress.SingleBar>();
  private readonly lastLine = new Map<string, number>();

  constructor(private readonly options: ReporterOptions) {
    if (options.bars ?? Boolean(options.stderr.isTTY)) {
      this.multi = new cliProgress.MultiBar({
        stream: options.stderr,
        format: '{image} |{bar}| {percentage}% {done} of {size} via {source}',
        barsize: 30,
        hideCursor: true,
        clearOnComplete: true,
        autopadding: true,
      });
    }
  }

  private say(text: string): void {
    if (this.multi) this.multi.log(`${text}\n`);
    else this.options.stderr.write(`${text}\n`);
  }

  event(e: AgentEvent): void {
    switch (e.type) {
      case 'source-failed':
        this.say(`${e.image}: ${e.source} ${e.phase} failed: ${e.error.message}`);
        break;
      case 'pull-start':
        if (this.multi) {
          const payload = { image: e.image, done: '0 B', size: '?', source: e.source };
          this.bars.set(e.image, this.multi.create(1, 0, payload));
        } else {
          this.say(`${e.image}: pulling from ${e.source} (${e.ref})`);
          // The line just said the pull started; the first count is worth a line only later.
          this.lastLine.set(e.image, Date.now());
        }
        break;
      case 'pull-progress':
        this.progress(e.image, e.bytes, e.total, e.source);
        break;
      case 'pull-retry':
        this.say(`${e.image}: ${e.error.message}; attempt ${e.attempt + 1}` +
          (e.delayMs > 0 ? ` in ${(e.delayMs / 1000).toFixed(0)} s` : ''));
        break;
      case 'ensured':
        this.dropBar(e.result.image);
        if (this.options.stream) this.say(ensureLine(e.result));
        break;
      case 'image-failed':
        this.dropBar(e.image);
        if (this.options.stream) this.say(`${e.image}: failed: ${e.error.message}`);
        break;
      case 'removed':
        this.say(`${e.image}: removed ${e.id.slice(0, 19)} ` +
          `(${e.reason}, ${formatBytes(e.bytes)})`);
        break;
      case 'remove-failed':
        this.say(`${e.image}: could not remove ${e.id.slice(0, 19)}: ${e.error.message}`);
        break;
      case 'tag-moved':
        this.say(`${e.image}: tag moved to ${short(e.to)}`);
        break;
      case 'disk-low':
        this.say(`disk ${e.path}: ${formatBytes(e.free)} free, below ${formatBytes(e.floor)}; ` +
          'pruning first');
        break;
      case 'cycle-start':
        this.say(`cycle ${e.cycle} (${e.trigger}): ${e.images} images`);
        break;
      default:
        break;
    }
  }

  /**
   * The engine announces layers before it knows their sizes, and counts only those it
   * downloads: until it has counted something there are no bytes to tell.
   */
  private progress(image: string, bytes: number, total: number, source: string): void {
    const size = total > 0 && total >= bytes ? formatBytes(total) : undefined;
    const bar = this.bars.get(image);
    if (bar) {
      bar.setTotal(Math.max(total, bytes, 1));
      bar.update(bytes, { done: formatBytes(bytes), size: size ?? '?', source });
      return;
    }
    if (bytes === 0) return;
    const now = Date.now();
    const every = this.options.progressLineMs ?? REPORTER_DEFAULTS.progressLineMs;
    if (now - (this.lastLine.get(image) ?? 0) < every) return;
    this.lastLine.set(image, now);
    this.say(`${image}: ${formatBytes(bytes)}${size ? ` of ${size}` : ''} from ${source}`);
  }

  private dropBar(image: string): void {
    const bar = this.bars.get(image);
    if (bar && this.multi) {
      bar.stop();
      this.multi.remove(bar);
    }
    this.bars.delete(image);
    this.lastLine.delete(image);
  }

  ensured(result: EnsureResult): void {
    this.dropBar(result.image);
    this.multi?.stop();
    this.options.stdout.write(`${ensureLine(result)}\n`);
  }

  failed(image: string, err: WharfError): void {
    this.dropBar(image);
    this.multi?.stop();
    this.options.stderr.write(`error: ${err.message} [${err.code}]\n`);
    if (err.hint) this.options.stderr.write(`hint: ${err.hint}\n`);
  }

  cycle(report: CycleReport): void {
    if (this.multi) this.multi.log(cycleTable(report));
    else this.options.stdout.write(cycleTable(report));
  }

  /**
   * Log lines in plain words, and through `say` so that they land above the bars rather than
   * through them. pino writes one whole line per call.
   */
  logDestination(): NodeJS.WritableStream {
    return new Writable({
      write: (chunk: Buffer, _encoding, done) => {
        for (const line of chunk.toString().split('\n')) {
          if (line.trim()) this.say(plainLogLine(line));
        }
        done();
      },
    });
  }

  close(): void {
    this.multi?.stop();
  }
}

class JsonReporter implements Reporter {
  private readonly lastProgress = new Map<string, number>();

  constructor(private readonly options: ReporterOptions) {}

  private write(value: unknown): void {
    this.options.stdout.write(`${JSON.stringify(value)}\n`);
  }

  event(e: AgentEvent): void {
    if (!this.options.stream) return;
    if (e.type === 'pull-progress') {
      // Progress comes many times a second; a machine reading the stream wants a pulse.
      const now = Date.now();
      if (now - (this.lastProgress.get(e.image) ?? 0) < 1000) return;
      this.lastProgress.set(e.image, now);
    }
    this.write({ time: new Date().toISOString(), event: e.type, ...payloadOf(e) });
  }

  ensured(result: EnsureResult): void {
    if (!this.options.stream) this.write(result);
  }

  failed(image: string, err: WharfError, seconds: number): void {
    // The same keys as a success, so a script reading `.source` or `.digest` needs no case.
    if (!this.options.stream) {
      this.write({ image, digest: null, source: null, seconds, error: summarize(err) });
    }
    else this.write({ time: new Date().toISOString(), event: 'error', error: summarize(err) });
  }

  cycle(): void {
    // The cycle's table travels as the `cycle-end` event.
  }

  logDestination(): NodeJS.WritableStream {
    // Scripts that asked for JSON get the log as JSON too, apart from the results on stdout.
    return this.options.stderr;
  }

  close(): void {}
}

function payloadOf(e: AgentEvent): Record<string, unknown> {
  const { type: _type, ...rest } = e;
  return rest;
}
