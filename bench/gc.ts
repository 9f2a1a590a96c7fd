import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

import { makeTempDir } from '../test/helpers/tmp.js';
import { startTestMirror } from '../test/support/mirror.js';
import { fillStore } from './support/blob-fill.js';
import { Child } from './support/child.js';
import { KiB } from './support/format.js';
import { gcReport, type GcData, type Window } from './support/gc-report.js';
import type { LoadReply, LoadRequest } from './support/load-worker.js';
import type { BenchResult } from './support/report.js';
import { settleDisk } from './support/settle.js';

interface Sizes {
  /** gc rounds; each evicts one tier of cold blobs. */
  tiers: number;
  perTier: number;
  hot: number;
  blobSize: number;
  /** Cached-blob GETs per second, open loop: well below what the mirror can serve. */
  perSecond: number;
  /** Length of each window with no gc, between the gc rounds. */
  idleMs: number;
}

const FULL: Sizes = {
  tiers: 5, perTier: 5000, hot: 64, blobSize: 4 * KiB, perSecond: 200, idleMs: 3000,
};
const QUICK: Sizes = {
  tiers: 2, perTier: 2000, hot: 32, blobSize: 4 * KiB, perSecond: 200, idleMs: 1500,
};

const UPSTREAM = 'origin';
const REPO = 'ci/gc';
/** Time between windows, so a request held up by one gc is not counted in the idle window. */
const GAP_MS = 300;

/**
 * Latency of cached-blob GETs while the mirror's gc evicts thousands of blobs, against the
 * same GETs with no gc running, in alternating windows of one run.
 */
export async function benchGc(options: { quick: boolean }): Promise<BenchResult> {
  const started = performance.now();
  const sizes = options.quick ? QUICK : FULL;
  const data = join(await makeTempDir('bench-gc'), 'data');
  const filled = await fillStore(data, {
    hot: sizes.hot, tiers: sizes.tiers, perTier: sizes.perTier, blobSize: sizes.blobSize,
    upstream: UPSTREAM, repo: REPO,
  });
  // Nothing listens on the discard port: a hot blob served from the cache must never need
  // its upstream, and a request that tried would fail and show up as an error.
  const running = await startTestMirror({ upstreams: [`${UPSTREAM}=http://127.0.0.1:9`], data });
  await settleDisk();
  const urls = filled.hot.map((d) => `${running.url}/v2/${UPSTREAM}/${REPO}/blobs/${d}`);

  const load = await Child.start<LoadRequest, LoadReply>(
    new URL('./support/load-worker.ts', import.meta.url), 'load',
  );
  await load.ask({ op: 'start', urls, perSecond: sizes.perSecond, connections: 8 });
  // Connections, JIT and SQLite's page cache warm up before anything is counted.
  await sleep(1000);

  const windows: Window[] = [];
  const idle = async () => {
    const start = now();
    await sleep(sizes.idleMs);
    windows.push({ kind: 'idle', start, end: now(), evicted: 0 });
    await sleep(GAP_MS);
  };
  for (const tier of filled.tiers) {
    await idle();
    const start = now();
    const result = await running.mirror.cache.gc(tier.length * sizes.blobSize);
    windows.push({ kind: 'gc', start, end: now(), evicted: result.count });
    await sleep(GAP_MS);
  }
  await idle();

  const samples = await load.ask({ op: 'stop' });
  if (samples.op !== 'stopped') throw new Error('load client answered out of turn');
  await load.stop();

  const hotLost = filled.hot.filter((d) => !running.mirror.index.getBlob(d)).length;
  const coldLeft = filled.tiers.flat().filter((d) => running.mirror.index.getBlob(d)).length;
  const gcData: GcData = {
    ...sizes,
    windows,
    hotLost,
    coldLeft,
    errors: samples.errors,
    firstError: samples.firstError,
  };
  const report = gcReport(gcData, samples.due, samples.latency);
  return {
    name: 'gc',
    seconds: (performance.now() - started) / 1000,
    sections: report.sections,
    checks: report.checks,
    data: { ...gcData, latency: report.latency },
  };
}

/** Milliseconds since the epoch, sub-millisecond and comparable with the load process. */
function now(): number {
  return performance.timeOrigin + performance.now();
}
