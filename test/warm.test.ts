import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { stringify } from 'yaml';
import type { CycleReport } from '../src/agent/events.js';
import { runWarm, type WarmCliFlags } from '../src/cli/warm.js';
import { startDockerd, type Dockerd } from './helpers/dockerd.js';
import { buildImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry } from './helpers/registry.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';
import { waitUntil } from './helpers/wait.js';
import { startTestMirror } from './support/mirror.js';
import { captureOutput } from './support/output.js';

interface Run {
  code: Promise<number>;
  out: () => string;
  err: () => string;
  events: () => Array<Record<string, unknown>>;
  stop: () => void;
}

describe('wharf warm keeps the listed images on the engine', () => {
  let dockerd: Dockerd;

  before(async () => {
    dockerd = await startDockerd();
  });
  after(cleanupAll);

  function warm(flags: WarmCliFlags, images: string[] = []): Run {
    const io = captureOutput();
    const controller = new AbortController();
    const env = { DOCKER_HOST: dockerd.host, DOCKER_CONFIG: dockerd.dockerConfig };
    const { stdout, stderr } = io;
    const code = runWarm(images, flags, { stdout, stderr, env, signal: controller.signal });
    return {
      code,
      out: () => io.out,
      err: () => io.err,
      events: () => io.out.trim().split('\n').filter(Boolean)
        .map((l) => JSON.parse(l) as Record<string, unknown>),
      stop: () => controller.abort(),
    };
  }

  function reports(run: Run): CycleReport[] {
    return run.events().filter((e) => e.event === 'cycle-end').map((e) => e.report as CycleReport);
  }

  async function configFile(dir: string, doc: Record<string, unknown>): Promise<string> {
    const path = join(dir, 'warm.yml');
    await writeFile(path, stringify({ state: join(dir, 'state.json'), ...doc }));
    return path;
  }

  async function digestsOf(name: string): Promise<string[]> {
    const format = '{{json .RepoDigests}}';
    const out = await dockerd.docker(['image', 'inspect', '--format', format, name])
      .catch(() => '[]');
    return (JSON.parse(out) as string[]).map((d) => d.slice(d.indexOf('@') + 1));
  }

  async function present(name: string): Promise<boolean> {
    return dockerd.docker(['image', 'inspect', name]).then(() => true, () => false);
  }

  /** One small image per repository, tag v1; returns their names. */
  async function pushAll(dir: string, url: string, host: string, repos: string[]) {
    const names: string[] = [];
    for (const repo of repos) {
      const image = await buildImage(join(dir, repo.replace('/', '-')), {
        layers: [50_000], tag: 'v1',
      });
      await pushLayout(url, repo, 'v1', image.dir);
      names.push(`${host}/${repo}:v1`);
    }
    return names;
  }

  test('of three images one missing at the origin fails, the other two are pulled', async () => {
    const dir = await makeTempDir('warm-three');
    const origin = await startRegistry({ logLevel: 'error' });
    const mirror = await startTestMirror({ upstreams: [origin.url] });
    const a = await buildImage(join(dir, 'a'), { layers: [200_000], tag: 'v1' });
    const b = await buildImage(join(dir, 'b'), { layers: [150_000], tag: 'v1' });
    await pushLayout(origin.url, 'warm/a', 'v1', a.dir);
    await pushLayout(origin.url, 'warm/b', 'v1', b.dir);
    const names = ['warm/a', 'warm/missing', 'warm/b'].map((r) => `${origin.host}/${r}:v1`);
    const config = await configFile(dir, { mirror: mirror.url, images: names, retries: 0 });

    const run = warm({ config, once: true, json: true });

    assert.equal(await run.code, 1, run.err());
    const [report] = reports(run);
    assert.deepEqual(report!.rows.map((r) => [r.image, r.action]), [
      [names[0], 'pulled'],
      [names[1], 'failed'],
      [names[2], 'pulled'],
    ]);
    assert.equal(report!.rows[1]!.error?.code, 'WHARF_MANIFEST_UNKNOWN');
    assert.ok((await digestsOf(names[0]!)).includes(a.digest));
    assert.ok((await digestsOf(names[2]!)).includes(b.digest));
  });

  test('keep: 1 removes the older version once the tag has moved', async () => {
    const dir = await makeTempDir('warm-keep');
    const origin = await startRegistry({ logLevel: 'error' });
    const mirror = await startTestMirror({ upstreams: [origin.url], tagTtlMs: 0 });
    const v1 = await buildImage(join(dir, 'v1'), { layers: [200_000], tag: 'stable' });
    await pushLayout(origin.url, 'warm/keep', 'stable', v1.dir);
    const name = `${origin.host}/warm/keep:stable`;
    const config = await configFile(dir, { mirror: mirror.url, keep: 1, images: [name] });
    assert.equal(await warm({ config, once: true, json: true }).code, 0);
    const oldId = (await dockerd.docker(['image', 'inspect', '--format', '{{.Id}}', name])).trim();
    const v2 = await buildImage(join(dir, 'v2'), { layers: [210_000], tag: 'stable' });
    await pushLayout(origin.url, 'warm/keep', 'stable', v2.dir);

    const run = warm({ config, once: true, json: true });

    assert.equal(await run.code, 0, run.err());
    const [report] = reports(run);
    const actions = report!.rows.map((r) => r.action).sort();
    assert.deepEqual(actions, ['pruned', 'pulled']);
    assert.ok((await digestsOf(name)).includes(v2.digest));
    const ids = await dockerd.docker(['image', 'ls', '--no-trunc', '--format', '{{.ID}}']);
    assert.ok(!ids.includes(oldId), 'the older version is gone');
  });

  test('watch mode pulls a moved tag within its interval', async () => {
    const dir = await makeTempDir('warm-watch');
    const origin = await startRegistry({ logLevel: 'error' });
    const mirror = await startTestMirror({ upstreams: [origin.url], tagTtlMs: 0 });
    const v1 = await buildImage(join(dir, 'v1'), { layers: [100_000], tag: 'edge' });
    await pushLayout(origin.url, 'warm/watch', 'edge', v1.dir);
    const name = `${origin.host}/warm/watch:edge`;
    const config = await configFile(dir, { mirror: mirror.url, watch: '1s', images: [name] });
    const run = warm({ config, json: true });
    try {
      await waitUntil(() => reports(run).length >= 1, { what: 'the first cycle' });
      const v2 = await buildImage(join(dir, 'v2'), { layers: [120_000], tag: 'edge' });
      await pushLayout(origin.url, 'warm/watch', 'edge', v2.dir);
      const pushed = Date.now();

      // The engine holds the new digest a moment before the cycle that pulled it reports.
      await waitUntil(() => reports(run).some((r) => r.trigger === 'watch'), {
        what: 'a cycle started by the watch',
        timeoutMs: 15_000,
        intervalMs: 100,
      });

      assert.ok((await digestsOf(name)).includes(v2.digest), 'the moved tag is on the engine');
      const cycle = reports(run).at(-1)!;
      assert.equal(cycle.trigger, 'watch');
      assert.deepEqual(cycle.rows.map((r) => r.action), ['pulled']);
      assert.ok(Date.now() - pushed < 1000 + cycle.seconds * 1000 + 2000);
      assert.ok(run.events().some((e) => e.event === 'tag-moved'));
    } finally {
      run.stop();
      assert.equal(await run.code, 0);
    }
  });

  test('a schedule runs cycles until a signal stops it with status 0', async () => {
    const dir = await makeTempDir('warm-schedule');
    const origin = await startRegistry({ logLevel: 'error' });
    const [name] = await pushAll(dir, origin.url, origin.host, ['warm/scheduled']);
    // croner reads a sixth field as seconds: a cycle every second.
    const config = await configFile(dir, { schedule: '* * * * * *', images: [name] });
    const run = warm({ config, json: true });

    await waitUntil(() => reports(run).some((r) => r.trigger === 'schedule'), {
      what: 'a scheduled cycle',
      timeoutMs: 10_000,
    });
    run.stop();

    assert.equal(await run.code, 0);
    const triggers = reports(run).map((r) => r.trigger);
    assert.equal(triggers[0], 'start');
    const scheduled = reports(run).find((r) => r.trigger === 'schedule')!;
    assert.deepEqual(scheduled.rows.map((r) => r.action), ['present']);
  });

  test('a config error names the exact key and exits 2', async () => {
    const dir = await makeTempDir('warm-config');
    const badKeep = await configFile(dir, { images: ['alpine:3', { image: 'x:1', keep: 0 }] });
    const run = warm({ config: badKeep, once: true });
    assert.equal(await run.code, 2);
    assert.match(run.err(), /images\.1\.keep/);

    const unknown = await configFile(dir, { images: ['alpine:3'], kep: 1 });
    const second = warm({ config: unknown, once: true });
    assert.equal(await second.code, 2);
    assert.match(second.err(), /kep: unknown key/);

    const nothingToWaitFor = await configFile(dir, { images: ['alpine:3'] });
    const idle = warm({ config: nothingToWaitFor });
    assert.equal(await idle.code, 2);
    assert.match(idle.err(), /--once/);
  });

  test('images given as arguments without --once stay warm until a signal', async () => {
    const dir = await makeTempDir('warm-args');
    const origin = await startRegistry({ logLevel: 'error' });
    const [name] = await pushAll(dir, origin.url, origin.host, ['warm/args']);
    // The file only keeps the state out of the home folder; it lists no image.
    const config = await configFile(dir, { images: [] });

    const run = warm({ config, json: true }, [name!]);

    await waitUntil(() => reports(run).length >= 1, { what: 'the first cycle' });
    assert.deepEqual(reports(run)[0]!.rows.map((r) => r.action), ['pulled']);
    // Still running after its first cycle: it is watching the tag, not done.
    const later = new Promise((resolve) => setTimeout(resolve, 500, 'running'));
    assert.equal(await Promise.race([run.code, later]), 'running', run.err());
    run.stop();
    assert.equal(await run.code, 0);
  });

  test('without --json a cycle ends with a table of image, digest and action', async () => {
    const dir = await makeTempDir('warm-table');
    const origin = await startRegistry({ logLevel: 'error' });
    const image = await buildImage(join(dir, 'img'), { layers: [100_000], tag: 'v1' });
    await pushLayout(origin.url, 'warm/table', 'v1', image.dir);
    const name = `${origin.host}/warm/table:v1`;
    const config = await configFile(dir, { images: [name] });

    const run = warm({ config, once: true });

    assert.equal(await run.code, 0, run.err());
    const [header, row] = run.out().split('\n');
    assert.match(header!, /^IMAGE\s+DIGEST\s+ACTION\s+SECONDS\s+SIZE$/);
    assert.match(row!, new RegExp(`^${name.replace(/[.:/]/g, '\\$&')}\\s+sha256:\\S+\\s+pulled`));
  });

  test('each failure is told once, in plain lines, and as JSON only with --json', async () => {
    const dir = await makeTempDir('warm-failure-once');
    const origin = await startRegistry({ logLevel: 'error' });
    const mirror = await startTestMirror({ upstreams: [origin.url] });
    const name = `${origin.host}/warm/nowhere:v1`;
    const config = await configFile(dir, { mirror: mirror.url, images: [name], retries: 0 });

    const plain = warm({ config, once: true });
    assert.equal(await plain.code, 1, plain.err());
    const json = warm({ config, once: true, json: true });
    assert.equal(await json.code, 1, json.err());

    const lines = plain.err().split('\n');
    assert.ok(!lines.some((l) => l.startsWith('{')), plain.err());
    assert.equal(lines.filter((l) => l.includes('origin resolve failed')).length, 1, plain.err());
    assert.equal(json.err(), '', 'the failures travel as events on stdout');
    assert.equal(json.events().filter((e) => e.event === 'source-failed').length, 2);
  });

  test('a warning that is no event reaches a log as a plain line', async () => {
    const dir = await makeTempDir('warm-warning-plain');
    // With no engine to list images, pruning can only warn; the image fails on its own row.
    const config = await configFile(dir, { images: ['registry.invalid/warm/x:v1'], retries: 0,
      removeUnusedAfter: '1d' });

    const run = warm({ config, once: true, engine: `unix://${dir}/no-engine.sock` });

    assert.equal(await run.code, 1, run.err());
    assert.match(run.err(), /^warning: prune failed \(err: .+\)$/m);
    assert.ok(!run.err().split('\n').some((l) => l.startsWith('{')), run.err());
  });

  // The next two remove every image no list names, so they come last in this file.
  test('unlisted images unused for removeUnusedAfter go; those in use stay', async () => {
    const dir = await makeTempDir('warm-unused');
    const origin = await startRegistry({ logLevel: 'error' });
    const names = await pushAll(dir, origin.url, origin.host, ['warm/listed', 'warm/stray',
      'warm/held']);
    await dockerd.docker(['pull', names[1]!]);
    await dockerd.docker(['pull', names[2]!]);
    await dockerd.docker(['create', '--name', 'holder', names[2]!, '/bin/true']);
    const config = await configFile(dir, { images: [names[0]], removeUnusedAfter: '0s' });

    const run = warm({ config, once: true, json: true });

    assert.equal(await run.code, 0, run.err());
    const [report] = reports(run);
    const pruned = report!.rows.filter((r) => r.action === 'pruned').map((r) => r.image);
    assert.ok(pruned.includes(names[1]!), JSON.stringify(report!.rows));
    assert.equal(await present(names[1]!), false);
    assert.equal(await present(names[2]!), true, 'the image a container uses stays');
    assert.equal(await present(names[0]!), true);
    await dockerd.docker(['rm', 'holder']);
  });

  test('an engine that cannot list its images for the disk floor still gets a table', async () => {
    const dir = await makeTempDir('warm-floor-unlisted');
    const config = await configFile(dir, { images: ['registry.invalid/warm/x:v1'], retries: 0,
      minFreeDisk: '1000TB', diskPath: dir });

    const run = warm({ config, once: true, json: true, engine: `unix://${dir}/no-engine.sock` });

    assert.equal(await run.code, 1, run.out() + run.err());
    const [report] = reports(run);
    assert.ok(report, run.out() + run.err());
    const floor = report.rows.find((r) => r.image === `disk floor ${dir}`);
    assert.equal(floor?.action, 'failed');
    assert.equal(floor?.error?.code, 'WHARF_ENGINE_UNREACHABLE');
    assert.equal(report.rows.find((r) => r.image.includes('warm/x'))?.action, 'failed');
    assert.equal(report.failed, 2);
  });

  test('below the free-disk floor it prunes before it pulls', async () => {
    const dir = await makeTempDir('warm-floor');
    const origin = await startRegistry({ logLevel: 'error' });
    const names = await pushAll(dir, origin.url, origin.host, ['warm/wanted', 'warm/old']);
    await dockerd.docker(['pull', names[1]!]);
    // No disk here has a petabyte free: the floor is never met, so all that may go goes.
    const config = await configFile(dir, { images: [names[0]], minFreeDisk: '1000TB',
      diskPath: dir });

    const run = warm({ config, once: true, json: true });

    assert.equal(await run.code, 0, run.out());
    assert.ok(run.events().some((e) => e.event === 'disk-low'));
    const [report] = reports(run);
    const actions = report!.rows.map((r) => `${r.action} ${r.image}`);
    const prunedAt = actions.indexOf(`pruned ${names[1]}`);
    assert.ok(prunedAt >= 0 && prunedAt < actions.indexOf(`pulled ${names[0]}`),
      actions.join(', '));
    assert.equal(await present(names[1]!), false);
    assert.equal(await present(names[0]!), true);
  });
});
