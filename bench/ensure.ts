import { execFile } from 'node:child_process';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { startDockerd, type Dockerd } from '../test/helpers/dockerd.js';
import { startProcess, startupError } from '../test/helpers/process.js';
import { startRegistry } from '../test/helpers/registry.js';
import { startRelay } from '../test/helpers/relay.js';
import { freePort, makeTempDir } from '../test/helpers/tmp.js';
import { waitUntil } from '../test/helpers/wait.js';
import { MiB, bytes, ms, rate, sizeLabel, times } from './support/format.js';
import { pushImages } from './support/origin-images.js';
import { check, type BenchResult } from './support/report.js';
import { settleDisk } from './support/settle.js';
import { median } from './support/stats.js';
import { ROOT, buildWharf } from './support/wharf-build.js';

const run = promisify(execFile);

/** The link between the runner and the origin registry. */
const LINK_BYTES_PER_SECOND = 100 * MiB;
const REPO = 'bench/ensure';

interface Sizes {
  layers: number[];
  absentRuns: number;
  presentRuns: number;
}

const FULL: Sizes = { layers: [128, 128, 128, 128].map((n) => n * MiB), absentRuns: 2,
  presentRuns: 7 };
const QUICK: Sizes = { layers: [16, 16, 16, 16].map((n) => n * MiB), absentRuns: 1,
  presentRuns: 3 };

interface EnsureJson {
  source: string;
  seconds: number;
  bytes: number;
  phases: { resolve: number; pull: number };
}

/** How `wharf ensure` is started: the built CLI, as a runner's job step starts it. */
interface WharfCli {
  args(image: string, mirror: string): string[];
  note?: string;
}

async function wharfCli(): Promise<WharfCli> {
  const bin = join(ROOT, 'bin/wharf.js');
  const wired = await run(process.execPath, [bin, '--help'])
    .then(({ stdout }) => /^\s+ensure\b/m.test(stdout), () => false);
  if (wired) {
    return { args: (image, mirror) => [bin, 'ensure', image, '--mirror', mirror, '--json'] };
  }
  // Until main.ts registers the command, the same built module is loaded by a two-line entry
  // point: the same Node start-up and imports, minus those of `serve`.
  const entry = [
    `import { Command } from 'commander';`,
    `import { register } from ${JSON.stringify(join(ROOT, 'dist/cli/ensure.js'))};`,
    `const program = new Command(); register(program);`,
    `await program.parseAsync(process.argv.slice(1), { from: 'user' });`,
  ].join('\n');
  return {
    args: (image, mirror) => ['--input-type=module', '-e', entry, 'ensure', image, '--mirror',
      mirror, '--json'],
    note: 'main.ts does not register ensure yet: the built dist/cli/ensure.js ran from a ' +
      'two-line entry point',
  };
}

/** `wharf serve` from dist/, its upstream under its default name, `127.0.0.1_PORT`. */
async function startMirror(upstreamUrl: string): Promise<{ url: string; stop(): Promise<void> }> {
  const dir = await makeTempDir('bench-ensure-mirror');
  const port = await freePort();
  const proc = await startProcess({
    name: 'wharf serve',
    command: process.execPath,
    args: [join(ROOT, 'bin/wharf.js'), 'serve', '--listen', `127.0.0.1:${port}`,
      '--data', join(dir, 'data'), '--upstream', upstreamUrl, '--log-level', 'warn'],
    logFile: join(dir, 'wharf.log'),
    cwd: dir,
  });
  const url = `http://127.0.0.1:${port}`;
  try {
    await waitUntil(async () => (await fetch(`${url}/v2/`)).ok, {
      what: `wharf serve on ${url}`,
      timeoutMs: 20_000,
      abort: () => proc.exit() && new Error('exited'),
    });
  } catch (err) {
    throw await startupError(proc, (err as Error).message);
  }
  return { url, stop: async () => void (await proc.stop()) };
}

async function timed<T>(fn: () => Promise<T>): Promise<{ ms: number; value: T }> {
  const started = performance.now();
  const value = await fn();
  return { ms: performance.now() - started, value };
}

/** Removes the image and every name it has, so the next pull starts from nothing. */
async function forget(dockerd: Dockerd, name: string): Promise<void> {
  const id = await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', name])
    .then((out) => out.trim(), () => '');
  if (id) await dockerd.docker(['image', 'rm', '--force', id]);
  await settleDisk();
}

/**
 * `wharf ensure` against `docker pull`, on one engine in one run: for an image already
 * present (both ask a registry for the tag's digest), and for an absent image, ensure through
 * a warm mirror against docker pulling from the origin behind a 100 MiB/s link.
 */
export async function benchEnsure(options: { quick: boolean } = { quick: false }) {
  const started = performance.now();
  const sizes = options.quick ? QUICK : FULL;
  const notes: string[] = [];
  const buildNote = await buildWharf();
  if (buildNote) notes.push(buildNote);
  const cli = await wharfCli();
  if (cli.note) notes.push(cli.note);

  const origin = await startRegistry({ logLevel: 'warn' });
  const relay = await startRelay(origin.port, { bytesPerSecond: LINK_BYTES_PER_SECOND });
  const tag = sizeLabel(sizes.layers.reduce((a, b) => a + b, 0));
  const [image] = await pushImages(origin.url, [{ repo: REPO, tag, layers: sizes.layers }]);
  const mirror = await startMirror(relay.url);
  const dockerd = await startDockerd();
  const name = `${relay.host}/${REPO}:${tag}`;

  const ensure = async () => {
    const { stdout } = await run(process.execPath, cli.args(name, mirror.url), {
      env: { ...process.env, DOCKER_HOST: dockerd.host, DOCKER_CONFIG: dockerd.dockerConfig },
      maxBuffer: 16 * 1024 * 1024,
    });
    return JSON.parse(stdout) as EnsureJson;
  };
  const dockerPull = () => dockerd.docker(['pull', '--quiet', name], { timeoutMs: 600_000 });

  // The mirror is warm: a first ensure fetched every blob from the origin through the link.
  const warmup = await timed(ensure);
  if (warmup.value.source !== 'mirror') {
    throw new Error(`warm-up came from ${warmup.value.source}`);
  }

  const absent = { wharf: [] as number[], docker: [] as number[], bytes: 0 };
  for (let i = 0; i < sizes.absentRuns; i++) {
    await forget(dockerd, name);
    const w = await timed(ensure);
    if (w.value.source !== 'mirror') throw new Error(`ensure came from ${w.value.source}`);
    absent.wharf.push(w.ms);
    absent.bytes = w.value.bytes;
    await forget(dockerd, name);
    absent.docker.push((await timed(dockerPull)).ms);
  }

  const present = { wharf: [] as number[], docker: [] as number[], inProcess: [] as number[] };
  for (let i = 0; i < sizes.presentRuns; i++) {
    const w = await timed(ensure);
    if (w.value.source !== 'local') throw new Error(`present image came from ${w.value.source}`);
    present.wharf.push(w.ms);
    present.inProcess.push(w.value.seconds * 1000);
    present.docker.push((await timed(dockerPull)).ms);
  }

  await dockerd.stop();
  await mirror.stop();
  await relay.stop();
  await origin.stop();

  const m = {
    presentWharf: median(present.wharf),
    presentDocker: median(present.docker),
    presentWork: median(present.inProcess),
    absentWharf: median(absent.wharf),
    absentDocker: median(absent.docker),
  };
  const absentRatio = m.absentWharf / m.absentDocker;
  const presentRatio = m.presentWharf / m.presentDocker;
  notes.push(
    `image ${bytes(image!.pullBytes)} in ${sizes.layers.length} plain-tar layers; ` +
      `origin behind a ${rate(LINK_BYTES_PER_SECOND)} relay; mirror and engine on loopback`,
    'medians; wharf times are the whole CLI run, Node start-up included; "work" is the ' +
      'seconds ensure itself reports',
    `runs: ${sizes.absentRuns} absent, ${sizes.presentRuns} present; warm-up ensure ` +
      `(cold mirror) took ${ms(warmup.ms)}`,
  );

  const result: BenchResult = {
    name: 'ensure',
    seconds: (performance.now() - started) / 1000,
    sections: [{
      title: 'wharf ensure against docker pull (time; ratio is wharf / docker)',
      header: ['case', 'wharf ensure', 'docker pull', 'ratio', 'speed-up'],
      rows: [
        ['present (both ask a registry)', ms(m.presentWharf), ms(m.presentDocker),
          times(presentRatio), times(1 / presentRatio)],
        ['present, ensure work only', ms(m.presentWork), ms(m.presentDocker),
          times(m.presentWork / m.presentDocker), times(m.presentDocker / m.presentWork)],
        [`absent ${tag} (warm mirror vs origin)`, ms(m.absentWharf), ms(m.absentDocker),
          times(absentRatio), times(1 / absentRatio)],
      ],
      notes,
    }],
    checks: [
      check('absent image: ensure via warm mirror / docker pull from origin', absentRatio,
        'max', 1),
    ],
    data: { sizes, medians: m, absent, present, pulledBytes: absent.bytes, warmupMs: warmup.ms },
  };
  return result;
}
