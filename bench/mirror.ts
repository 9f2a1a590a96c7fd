import { setTimeout as sleep } from 'node:timers/promises';

import { startRegistry } from '../test/helpers/registry.js';
import { startRelay, type Relay } from '../test/helpers/relay.js';
import { MiB, sizeLabel } from './support/format.js';
import { mirrorReport, type MirrorData, type PullRun } from './support/mirror-report.js';
import {
  startRegistryProxy, startWharf, type MirrorUnderTest,
} from './support/mirrors.js';
import { CpuMeter } from './support/cpu-time.js';
import { pushImages, type OriginImage } from './support/origin-images.js';
import { PeakRss } from './support/peak-rss.js';
import { PullPool } from './support/pull-pool.js';
import type { BenchResult } from './support/report.js';
import { settleDisk } from './support/settle.js';
import { buildWharf } from './support/wharf-build.js';

/** The link between the mirror and the origin, shared by all its connections. */
export const LINK_BYTES_PER_SECOND = 100 * MiB;
const HERD_CLIENTS = 8;
const WARM_CLIENTS = 4;
/** Blobs each client downloads at once, like docker's default max-concurrent-downloads. */
const PARALLEL = 3;
const REPO = 'ci/big';

interface Sizes {
  /** Layers of the image the herd pulls first; at least 256 MiB in a full run. */
  small: number[];
  /** Layers of the bigger image: pulled by a herd too (blob size vs memory), then warm. */
  large: number[];
  warmRounds: number;
}

const FULL: Sizes = { small: layers(4, 64 * MiB), large: layers(4, 256 * MiB), warmRounds: 3 };
const QUICK: Sizes = { small: layers(4, 16 * MiB), large: layers(4, 64 * MiB), warmRounds: 2 };

/**
 * wharf against the registry:2 pull-through cache: the same origin behind the same 100 MiB/s
 * link, the same images, the same clients, one after the other in one run.
 */
export async function benchMirror(options: { quick: boolean }): Promise<BenchResult> {
  const started = performance.now();
  const sizes = options.quick ? QUICK : FULL;
  const notes: string[] = [];
  const buildNote = await buildWharf();
  if (buildNote) notes.push(buildNote);

  const origin = await startRegistry({ logLevel: 'warn' });
  const images = await pushImages(origin.url, [
    { repo: REPO, tag: sizeLabel(sum(sizes.small)), layers: sizes.small },
    { repo: REPO, tag: sizeLabel(sum(sizes.large)), layers: sizes.large },
  ]);
  const pool = await PullPool.start(HERD_CLIENTS);
  // Fresh client processes make their first pull on cold code paths, and so does this
  // process's relay: a cost the mirror measured first would pay alone. One unmeasured herd
  // from the origin first, through a relay paced too fast to hold it back.
  const warmUpRelay = await startRelay(origin.port, { bytesPerSecond: 100 * LINK_BYTES_PER_SECOND });
  const warmUp = await pool.herd(HERD_CLIENTS, {
    registry: warmUpRelay.url, repo: REPO, tag: images[0]!.tag, parallel: PARALLEL,
  });
  await warmUpRelay.stop();
  if (warmUp.failures) {
    throw new Error(`warm-up pull from the origin failed: ${warmUp.outcomes[0]?.error}`);
  }

  const data: MirrorData = {
    linkBytesPerSecond: LINK_BYTES_PER_SECOND,
    herdClients: HERD_CLIENTS,
    warmClients: WARM_CLIENTS,
    parallelPerClient: PARALLEL,
    images,
    cold: {},
    floor: {},
    warm: {},
  };

  const systems = [];
  for (const start of [startWharf, startRegistryProxy]) {
    systems.push(await coldHerds(start, origin.port, pool, images, data));
  }
  await warmRounds(systems, pool, images[images.length - 1]!, sizes.warmRounds, data);

  await pool.stop();
  for (const { mirror, relay } of systems) {
    await mirror.stop();
    await relay.stop();
  }
  await origin.stop();

  const report = mirrorReport(data);
  report.sections[0]?.notes?.push(...notes);
  return {
    name: 'mirror',
    seconds: (performance.now() - started) / 1000,
    ...report,
    data: { ...data, notes },
  };
}

interface System {
  mirror: MirrorUnderTest;
  relay: Relay;
}

/**
 * Starts one mirror behind a relay of its own, so its cache is empty and its byte counts start
 * at zero, and sends the herd at each image in turn. The mirror stays up for the warm rounds.
 */
async function coldHerds(
  start: (upstreamUrl: string) => Promise<MirrorUnderTest>,
  originPort: number,
  pool: PullPool,
  images: OriginImage[],
  data: MirrorData,
): Promise<System> {
  const relay = await startRelay(originPort, { bytesPerSecond: LINK_BYTES_PER_SECOND });
  const mirror = await start(relay.url);
  for (const image of images) {
    const cold = await pullRun(pool, HERD_CLIENTS, mirror, relay, image);
    ((data.cold[image.tag] ??= {})[mirror.label] = cold);
    progress(`cold herd ${image.tag} ${mirror.label}`, cold);
    // The same herd again from the now warm cache: how fast this machine's two cores can
    // serve and verify that many copies at all, whatever the link. It tells a mirror that
    // waits on the origin from one that is simply out of CPU.
    const floor = await pullRun(pool, HERD_CLIENTS, mirror, relay, image);
    ((data.floor[image.tag] ??= {})[mirror.label] = floor);
    progress(`warm herd ${image.tag} ${mirror.label}`, floor);
  }
  return { mirror, relay };
}

/**
 * Pulls from the warm caches, alternating between the mirrors, so that a noisy minute on the
 * machine falls on both rather than on whichever happened to run then.
 */
async function warmRounds(
  systems: System[],
  pool: PullPool,
  image: OriginImage,
  rounds: number,
  data: MirrorData,
): Promise<void> {
  for (let round = 0; round < rounds; round++) {
    const order = round % 2 === 0 ? systems : [...systems].reverse();
    for (const { mirror, relay } of order) {
      const run = await pullRun(pool, WARM_CLIENTS, mirror, relay, image);
      (data.warm[mirror.label] ??= []).push(run);
      progress(`warm ${image.tag} ${mirror.label}`, run);
    }
  }
}

/** `clients` pull `image` from `mirror` at once; origin bytes and the mirror's peak memory. */
async function pullRun(
  pool: PullPool,
  clients: number,
  mirror: MirrorUnderTest,
  relay: Relay,
  image: OriginImage,
): Promise<PullRun> {
  await settleDisk();
  const before = relay.bytesToClient;
  const rss = await PeakRss.start(mirror.pid);
  const mirrorCpu = await CpuMeter.start([mirror.pid]);
  const clientCpu = await CpuMeter.start(pool.pids(clients));
  const herd = await pool.herd(clients, {
    registry: mirror.url,
    repo: mirror.repoPath(image.repo),
    tag: image.tag,
    parallel: PARALLEL,
  });
  const peak = await rss.stop();
  const mirrorCpuMs = await mirrorCpu.stop();
  const clientCpuMs = await clientCpu.stop();
  // A mirror may still be draining an origin response its client no longer reads.
  await sleep(300);
  const times = herd.outcomes.map((o) => o.ms);
  return {
    clients,
    wallMs: herd.wallMs,
    clientMsMin: Math.min(...times),
    clientMsMax: Math.max(...times),
    bytesReceived: herd.outcomes.reduce((n, o) => n + o.bytes, 0),
    originBytes: relay.bytesToClient - before,
    peakRssBytes: peak.bytes,
    peakRssExact: peak.exact,
    mirrorCpuMs,
    clientCpuMs,
    failures: herd.failures,
    error: herd.outcomes.find((o) => o.error)?.error,
  };
}

function progress(what: string, run: PullRun): void {
  const failed = run.failures ? `, ${run.failures} failed: ${run.error}` : '';
  process.stderr.write(`  ${what}: ${(run.wallMs / 1000).toFixed(1)} s${failed}\n`);
}

function layers(count: number, size: number): number[] {
  return Array.from({ length: count }, () => size);
}

function sum(values: number[]): number {
  return values.reduce((a, b) => a + b, 0);
}
