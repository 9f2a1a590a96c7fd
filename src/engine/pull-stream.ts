import { WharfError } from '../errors.js';
import type { LayerProgress, PullProgress, PullResult } from './types.js';

/** One line of the engine's pull stream (JSON messages, one per line). */
interface StreamMessage {
  status?: string;
  id?: string;
  progressDetail?: { current?: number; total?: number };
  error?: string;
  errorDetail?: { message?: string; code?: number };
}

// Statuses that say a layer's bytes came over the network in this pull.
const FETCHING = new Set(['Downloading', 'Verifying Checksum', 'Download complete']);
const DONE = new Set(['Pull complete', 'Already exists', 'Download complete']);

/**
 * Follows a pull's progress stream. The engine answers 200 before it has talked to the
 * registry, so a failure arrives as an `error` line in the middle of a successful response:
 * every line has to be read for one.
 */
export class PullStream {
  private readonly layers = new Map<string, LayerProgress>();
  private digest: string | undefined;
  private status: string | undefined;
  private pending = '';
  private retryCount = 0;
  /** Layers whose bytes are all on the engine: downloaded, extracting, or there before. */
  private readonly downloaded = new Set<string>();

  constructor(private readonly ref: string) {}

  /** Feeds raw bytes; returns true when any line moved the pull forward. */
  write(chunk: string): boolean {
    this.pending += chunk;
    let moved = false;
    let newline = this.pending.indexOf('\n');
    while (newline >= 0) {
      const line = this.pending.slice(0, newline).trim();
      this.pending = this.pending.slice(newline + 1);
      if (line) moved = this.line(line) || moved;
      newline = this.pending.indexOf('\n');
    }
    return moved;
  }

  /** Handles what is left once the stream ended, and returns the pull's outcome. */
  end(): PullResult {
    const rest = this.pending.trim();
    this.pending = '';
    if (rest) this.line(rest);
    return { bytes: this.progress().bytes, digest: this.digest, status: this.status };
  }

  /**
   * True until every layer the stream has announced is downloaded. Until the engine has
   * read the manifest it has announced none, and that is talking to the registry too.
   */
  get downloading(): boolean {
    return this.layers.size === 0 || this.downloaded.size < this.layers.size;
  }

  /** How often the engine has started a layer's download over in this pull. */
  get retries(): number {
    return this.retryCount;
  }

  progress(): PullProgress {
    const layers = [...this.layers.values()];
    let bytes = 0;
    let total = 0;
    for (const layer of layers) {
      if (!layer.fetched) continue;
      bytes += layer.done ? Math.max(layer.current, layer.total) : layer.current;
      total += layer.total;
    }
    return { ref: this.ref, layers, bytes, total };
  }

  private line(text: string): boolean {
    let message: StreamMessage;
    try {
      message = JSON.parse(text) as StreamMessage;
    } catch {
      const what = 'the engine sent a pull message that is not JSON';
      throw new WharfError('WHARF_ENGINE_ERROR', what, {
        detail: { ref: this.ref, line: text.slice(0, 200) },
      });
    }
    if (message.error !== undefined || message.errorDetail !== undefined) {
      throw pullError(this.ref, message.errorDetail?.message ?? message.error ?? 'unknown error');
    }
    const status = message.status ?? '';
    if (status.startsWith('Digest: ')) this.digest = status.slice('Digest: '.length).trim();
    if (status.startsWith('Status: ')) this.status = status.slice('Status: '.length).trim();
    if (!message.id || status.startsWith('Pulling from')) return true;
    this.layerUpdate(message.id, status, message.progressDetail);
    // `Retrying in N seconds` counts as life: the engine is about to fetch the layer again
    // (five attempts at most), and cutting it now would only start the same thing over.
    return status !== 'Waiting';
  }

  private layerUpdate(id: string, status: string, detail: StreamMessage['progressDetail']): void {
    let layer = this.layers.get(id);
    if (!layer) {
      layer = { id, status, current: 0, total: 0, fetched: false, done: false };
      this.layers.set(id, layer);
    }
    // The engine counts down `Retrying in N seconds` once a second: one retry, many lines. A
    // download that breaks again before it reports any progress goes straight from `Retrying
    // in 1 second` to the next, longer countdown: a count that goes up is a retry too.
    if (status.startsWith('Retrying')) {
      const previous = layer.status.startsWith('Retrying') ? countdown(layer.status) : undefined;
      if (previous === undefined || countdown(status) > previous) this.retryCount++;
    }
    layer.status = status;
    if (FETCHING.has(status)) layer.fetched = true;
    if (status === 'Downloading') {
      layer.current = detail?.current ?? layer.current;
      if (detail?.total && detail.total > 0) layer.total = detail.total;
    }
    if (DONE.has(status)) layer.done = true;
    if (layer.done || status.startsWith('Extracting')) this.downloaded.add(id);
    // A retried download starts again from zero; what counts is what finally arrived.
    if (status.startsWith('Retrying')) layer.current = 0;
  }
}

/** The N of `Retrying in N seconds`; 0 when the engine words it otherwise. */
function countdown(status: string): number {
  return Number(/(\d+)/.exec(status)?.[1] ?? 0);
}

/** A pull failure the engine reported, with a hint for the causes users meet most. */
export function pullError(ref: string, message: string): WharfError {
  let hint: string | undefined;
  if (/server gave HTTP response to HTTPS client/i.test(message)) {
    hint = 'the registry speaks plain HTTP: add its host to the engine\'s insecure-registries, ' +
      'or serve it over TLS';
  } else if (/unauthorized|authentication required|denied/i.test(message)) {
    hint = 'log in to the registry with docker login, so wharf can pass the credentials on';
  } else if (/no matching manifest/i.test(message)) {
    hint = 'the image has no entry for this engine\'s platform; see --platform';
  } else if (/no space left/i.test(message)) {
    hint = 'free disk space on the engine\'s data root, e.g. with wharf warm\'s pruning';
  }
  return new WharfError('WHARF_PULL_FAILED', `pull of ${ref} failed: ${message}`, {
    hint,
    detail: { ref },
  });
}
