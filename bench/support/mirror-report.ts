import { bytes, ms, rate, times } from './format.js';
import type { OriginImage } from './origin-images.js';
import { check, type Check, type Section } from './report.js';
import { median } from './stats.js';
import { CLIENT_NICE } from './pull-pool.js';

/** Several clients pulling one image from one mirror at the same moment. */
export interface PullRun {
  clients: number;
  wallMs: number;
  clientMsMin: number;
  clientMsMax: number;
  /** Manifest and blob bytes all clients received together. */
  bytesReceived: number;
  /** Bytes the relay carried from the origin to the mirror during the run. */
  originBytes: number;
  peakRssBytes: number;
  /** Whether the peak is the kernel's (VmHWM after a reset) rather than sampled. */
  peakRssExact: boolean;
  /** CPU time the mirror process used during the run; undefined without /proc. */
  mirrorCpuMs?: number;
  /** CPU time the clients used together. */
  clientCpuMs?: number;
  failures: number;
  error?: string;
}

export interface MirrorData {
  linkBytesPerSecond: number;
  herdClients: number;
  warmClients: number;
  parallelPerClient: number;
  images: OriginImage[];
  /** image tag -> mirror label -> run */
  cold: Record<string, Record<string, PullRun>>;
  /** The same herd right after, from the warm cache: the machine's floor. Same keys. */
  floor: Record<string, Record<string, PullRun>>;
  /** mirror label -> one run per round */
  warm: Record<string, PullRun[]>;
}

const WHARF = 'wharf';
const OTHER = 'registry:2';

/** The targets from the issue that asked for this benchmark. */
const TARGET = {
  originBytesPerImage: 1.05,
  wallPerIdeal: 1.3,
  warmThroughputRatio: 0.8,
  /** The big image's blobs are four times the small one's; memory should barely move. */
  memoryGrowth: 1.25,
};

export function mirrorReport(data: MirrorData): { sections: Section[]; checks: Check[] } {
  const checks: Check[] = [];
  const sections = [coldSection, warmSection, memorySection].map((make) => make(data, checks));
  return { sections, checks };
}

function coldSection(data: MirrorData, checks: Check[]): Section {
  const rows: string[][] = [];
  for (const image of data.images) {
    const idealMs = (image.pullBytes / data.linkBytesPerSecond) * 1000;
    const runs = data.cold[image.tag] ?? {};
    for (const label of [WHARF, OTHER]) {
      const run = runs[label];
      if (!run) continue;
      const floor = data.floor[image.tag]?.[label];
      rows.push([
        image.tag, label, ms(run.wallMs), times(run.wallMs / idealMs),
        floor ? times(run.wallMs / floor.wallMs) : '-', bytes(run.originBytes),
        times(run.originBytes / image.pullBytes), cpu(run.mirrorCpuMs), cpu(run.clientCpuMs),
        bytes(run.peakRssBytes), failed(run),
      ]);
    }
    const wharf = runs[WHARF];
    const other = runs[OTHER];
    if (wharf && other) {
      rows.push([
        image.tag, `${OTHER} / ${WHARF}`, '', times(other.wallMs / wharf.wallMs), '', '',
        times(other.originBytes / wharf.originBytes), ratio(other.mirrorCpuMs, wharf.mirrorCpuMs),
        '', times(other.peakRssBytes / wharf.peakRssBytes), '',
      ]);
    }
    if (wharf) {
      const what = `wharf cold herd ${image.tag}`;
      checks.push(
        check(`${what}: origin bytes / image size`, wharf.originBytes / image.pullBytes, 'max',
          TARGET.originBytesPerImage),
        check(`${what}: wall time / ideal`, wharf.wallMs / idealMs, 'max', TARGET.wallPerIdeal),
        check(`${what}: failed pulls`, wharf.failures, 'max', 0),
      );
    }
  }
  return {
    title: `cold herd: ${data.herdClients} clients pull the same image at once, ` +
      `origin link ${rate(data.linkBytesPerSecond)} shared`,
    header: [
      'image', 'mirror', 'wall', 'x ideal', 'x floor', 'from origin', 'x image', 'mirror CPU',
      'clients CPU', 'peak RSS', 'failed',
    ],
    rows,
    notes: [
      'ideal wall = image size / link rate; ideal origin traffic = one copy of the image',
      'floor = the same herd again from the warm cache: what the CPUs allow, link aside',
      `each client: manifest, then ${data.parallelPerClient} blobs at a time, sha256 checked`,
      `clients run at nice ${CLIENT_NICE}, as if on machines of their own; both mirrors alike`,
      'CPU = user + system seconds during the run; mirror, origin, relay and clients share ' +
        'this machine\'s cores, so the CPU a mirror spends is time its clients wait for',
    ],
  };
}

function warmSection(data: MirrorData, checks: Check[]): Section {
  const image = data.images[data.images.length - 1]!;
  const throughput = (run: PullRun) => run.bytesReceived / (run.wallMs / 1000);
  const medians: Record<string, number> = {};
  const rows: string[][] = [];
  for (const label of [WHARF, OTHER]) {
    const runs = data.warm[label] ?? [];
    if (runs.length === 0) continue;
    medians[label] = median(runs.map(throughput));
    rows.push([
      label, rate(medians[label]!), runs.map((r) => rate(throughput(r))).join(', '),
      bytes(Math.max(...runs.map((r) => r.peakRssBytes))),
      bytes(runs.reduce((n, r) => n + r.originBytes, 0)),
      String(runs.reduce((n, r) => n + r.failures, 0)),
    ]);
  }
  const wharf = medians[WHARF];
  const other = medians[OTHER];
  if (wharf !== undefined && other !== undefined) {
    rows.push([`${WHARF} / ${OTHER}`, times(wharf / other), '', '', '', '']);
    checks.push(check('warm throughput, wharf / registry:2', wharf / other, 'min',
      TARGET.warmThroughputRatio));
  }
  return {
    title: `warm: ${data.warmClients} clients pull the ${image.tag} image from the cache`,
    header: ['mirror', 'median', 'each round', 'peak RSS', 'from origin', 'failed'],
    rows,
    notes: ['throughput = bytes all clients received / wall time; rounds alternate mirrors'],
  };
}

function memorySection(data: MirrorData, checks: Check[]): Section {
  const [small, large] = data.images;
  const rows: string[][] = [];
  if (!small || !large) return { title: 'memory', header: [], rows };
  for (const label of [WHARF, OTHER]) {
    const a = data.cold[small.tag]?.[label];
    const b = data.cold[large.tag]?.[label];
    if (!a || !b) continue;
    const growth = b.peakRssBytes / a.peakRssBytes;
    const warmA = data.floor[small.tag]?.[label];
    const warmB = data.floor[large.tag]?.[label];
    rows.push([
      label, bytes(a.peakRssBytes), bytes(b.peakRssBytes), times(growth),
      warmA ? bytes(warmA.peakRssBytes) : '-', warmB ? bytes(warmB.peakRssBytes) : '-',
    ]);
    if (label === WHARF) {
      checks.push(check(`wharf peak RSS, ${bytes(large.largestBlob)} blobs / ` +
        `${bytes(small.largestBlob)} blobs`, growth, 'max', TARGET.memoryGrowth));
    }
  }
  const exact = Object.values(data.cold).every((runs) =>
    Object.values(runs).every((r) => r.peakRssExact));
  return {
    title: `memory: the mirror's peak RSS with ${data.herdClients} clients, blobs of ` +
      `${bytes(small.largestBlob)} vs ${bytes(large.largestBlob)}`,
    header: [
      'mirror', `cold ${small.tag}`, `cold ${large.tag}`, 'growth', `warm ${small.tag}`,
      `warm ${large.tag}`,
    ],
    rows,
    notes: [exact
      ? 'peak = VmHWM of the mirror process, reset before each run'
      : 'peak = VmRSS sampled every 25 ms (resetting VmHWM was refused)'],
  };
}

function cpu(value: number | undefined): string {
  return value === undefined ? '-' : `${(value / 1000).toFixed(2)} s`;
}

function ratio(a: number | undefined, b: number | undefined): string {
  return a === undefined || !b ? '' : times(a / b);
}

function failed(run: PullRun): string {
  return run.failures ? `${run.failures}/${run.clients}` : '0';
}
