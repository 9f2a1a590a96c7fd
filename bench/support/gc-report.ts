import { bytes, ms, times } from './format.js';
import { check, type Check, type Section } from './report.js';
import { summarize, type Summary } from './stats.js';

/** A stretch of the run: either no gc, or one gc call from its start to its end. */
export interface Window {
  kind: 'idle' | 'gc';
  /** ms since the epoch */
  start: number;
  end: number;
  evicted: number;
}

export interface GcData {
  tiers: number;
  perTier: number;
  hot: number;
  blobSize: number;
  perSecond: number;
  idleMs: number;
  windows: Window[];
  /** Hot blobs gone from the index after the run: should be none. */
  hotLost: number;
  /** Cold blobs the gc rounds left behind: should be none. */
  coldLeft: number;
  errors: number;
  firstError?: string;
}

export interface GcLatency {
  idle: Summary;
  gc: Summary;
}

/** Sorts each request into the window it was due in; requests due in a gap are dropped. */
export function gcReport(
  data: GcData,
  due: Float64Array,
  latency: Float64Array,
): { sections: Section[]; checks: Check[]; latency: GcLatency } {
  const idle: number[] = [];
  const gc: number[] = [];
  for (let i = 0; i < due.length; i++) {
    if (Number.isNaN(latency[i]!)) continue;
    const w = data.windows.find((w) => due[i]! >= w.start && due[i]! < w.end);
    if (w) (w.kind === 'gc' ? gc : idle).push(latency[i]!);
  }
  const result = { idle: summarize(idle), gc: summarize(gc) };

  const gcWindows = data.windows.filter((w) => w.kind === 'gc');
  const gcMs = gcWindows.reduce((n, w) => n + (w.end - w.start), 0);
  const evicted = gcWindows.reduce((n, w) => n + w.evicted, 0);
  const row = (label: string, s: Summary) =>
    [label, String(s.count), ms(s.p50), ms(s.p95), ms(s.p99), ms(s.max)];
  const ratio = (k: keyof Summary) => times(result.gc[k] / result.idle[k]);

  const latencySection: Section = {
    title: `cached-blob GETs (${bytes(data.blobSize)}, ${data.hot} hot blobs, ` +
      `${data.perSecond}/s open loop) with and without a gc running`,
    header: ['', 'requests', 'p50', 'p95', 'p99', 'max'],
    rows: [
      row('no gc', result.idle),
      row('during gc', result.gc),
      ['gc / no gc', '', ratio('p50'), ratio('p95'), ratio('p99'), ratio('max')],
    ],
    notes: [
      'latency counts from when a request was due, so a stalled server is charged in full',
      `failed requests: ${data.errors}${data.firstError ? ` (${data.firstError})` : ''}`,
    ],
  };
  const evictionSection: Section = {
    title: 'eviction',
    header: ['rounds', 'blobs evicted', 'gc time', 'blobs/s', 'hot blobs lost', 'cold left'],
    rows: [[
      String(gcWindows.length), String(evicted), ms(gcMs), (evicted / (gcMs / 1000)).toFixed(0),
      String(data.hotLost), String(data.coldLeft),
    ]],
    notes: [`each round: gc(bytes of ${data.perTier} cold blobs), least recently used first`],
  };
  const checks = [
    check('hot blobs evicted while in use', data.hotLost, 'max', 0),
    check('cold blobs the gc left behind', data.coldLeft, 'max', 0),
    check('failed cached-blob requests', data.errors, 'max', 0),
  ];
  return { sections: [latencySection, evictionSection], checks, latency: result };
}
