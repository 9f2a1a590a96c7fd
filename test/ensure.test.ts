import assert from 'node:assert/strict';
import { rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent } from 'undici';
import { ensureImage } from '../src/agent/ensure.js';
import type { EnsureResult } from '../src/agent/events.js';
import { upstreamName } from '../src/agent/sources.js';
import { runEnsure, type EnsureFlags } from '../src/cli/ensure.js';
import { createReporter } from '../src/cli/reporter.js';
import { parseEngineAddress } from '../src/engine/address.js';
import { DockerEngine } from '../src/engine/client.js';
import type { RunningMirror } from '../src/mirror/server.js';
import { formatBytes } from '../src/util/units.js';
import { startDockerd, type Dockerd } from './helpers/dockerd.js';
import { startFaultyOrigin } from './helpers/faulty-origin.js';
import { buildImage, buildIndex } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry } from './helpers/registry.js';
import { cleanupAll, freePort, makeTempDir } from './helpers/tmp.js';
import { metric, startTestMirror } from './support/mirror.js';
import { captureOutput } from './support/output.js';

interface Outcome {
  code: number;
  stdout: string;
  stderr: string;
  json: Record<string, unknown>;
}

describe('wharf ensure makes an image present at the digest its tag names', () => {
  let dockerd: Dockerd;

  before(async () => {
    dockerd = await startDockerd();
  });
  after(cleanupAll);

  async function ensure(
    image: string,
    flags: EnsureFlags,
    extraEnv: Record<string, string> = {},
  ): Promise<Outcome> {
    const chunks = captureOutput();
    const env = { DOCKER_HOST: dockerd.host, DOCKER_CONFIG: dockerd.dockerConfig, ...extraEnv };
    const { stdout, stderr } = chunks;
    const code = await runEnsure(image, { json: true, ...flags }, { stdout, stderr, env });
    const json = chunks.out && flags.json !== false
      ? (JSON.parse(chunks.out) as Record<string, unknown>)
      : {};
    return { code, stdout: chunks.out, stderr: chunks.err, json };
  }

  /** An origin with one image pushed, and a mirror in front of it, for one test. */
  async function world(repo: string, layers = [300_000, 200_000]) {
    const dir = await makeTempDir(`ensure-${repo.replace(/\W/g, '-')}`);
    const origin = await startRegistry({ logLevel: 'error' });
    const mirror = await startTestMirror({ upstreams: [origin.url], tagTtlMs: 0 });
    const image = await buildImage(join(dir, 'v1'), { layers, tag: 'v1' });
    await pushLayout(origin.url, repo, 'v1', image.dir);
    return { dir, origin, mirror, image, name: `${origin.host}/${repo}:v1` };
  }

  async function localDigests(name: string): Promise<string[]> {
    const format = '{{json .RepoDigests}}';
    const out = await dockerd.docker(['image', 'inspect', '--format', format, name]);
    return (JSON.parse(out) as string[]).map((d) => d.slice(d.indexOf('@') + 1));
  }

  test('an absent image is pulled through the mirror and tagged with its own name', async () => {
    const { mirror, image, name } = await world('ci/absent');

    const out = await ensure(name, { mirror: mirror.url });

    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.equal(out.json.source, 'mirror');
    assert.equal(out.json.digest, image.digest);
    assert.equal(out.json.image, name);
    assert.ok((out.json.bytes as number) >= image.layers[0]!.size);
    const phases = out.json.phases as { resolve: number; pull: number };
    assert.ok(phases.resolve >= 0 && phases.pull > 0);
    assert.ok((await localDigests(name)).includes(image.digest));
  });

  test('an image already present at the tag digest is not pulled again', async () => {
    const { mirror, name, image } = await world('ci/present');
    assert.equal((await ensure(name, { mirror: mirror.url })).code, 0);
    const before = await pulls(mirror);

    const out = await ensure(name, { mirror: mirror.url });

    assert.equal(out.code, 0);
    assert.equal(out.json.source, 'local');
    assert.equal(out.json.digest, image.digest);
    assert.equal(out.json.bytes, 0);
    assert.equal(await pulls(mirror), before, 'no manifest GET reached the mirror');
  });

  test('a tag that moved at the origin is pulled at its new digest', async () => {
    const { dir, origin, mirror, name } = await world('ci/moved');
    assert.equal((await ensure(name, { mirror: mirror.url })).code, 0);
    const moved = await buildImage(join(dir, 'v2'), { layers: [250_000], tag: 'v1' });
    await pushLayout(origin.url, 'ci/moved', 'v1', moved.dir);

    const out = await ensure(name, { mirror: mirror.url });

    assert.equal(out.code, 0, out.stderr);
    assert.equal(out.json.source, 'mirror');
    assert.equal(out.json.digest, moved.digest);
    assert.ok((await localDigests(name)).includes(moved.digest));
  });

  test('when the mirror is down the image comes from the origin', async () => {
    const { name, image } = await world('ci/mirror-down');
    const deadMirror = `http://127.0.0.1:${await freePort()}`;

    const out = await ensure(name, { mirror: deadMirror });

    assert.equal(out.code, 0, out.stdout);
    assert.equal(out.json.source, 'origin');
    assert.equal(out.json.digest, image.digest);
    assert.ok((await localDigests(name)).includes(image.digest));
  });

  test('when the pull through the mirror fails the image comes from the origin', async () => {
    const dir = await makeTempDir('ensure-mirror-pull-fails');
    const origin = await startRegistry({ logLevel: 'error' });
    // The mirror reaches this origin through a proxy that cuts one layer off every time;
    // the engine reaches the origin directly.
    const faulty = await startFaultyOrigin(origin.url);
    const mirror = await startTestMirror({
      upstreams: [`${upstreamName(origin.host)}=${faulty.url}`],
      tagTtlMs: 0,
    });
    const image = await buildImage(join(dir, 'v1'), { layers: [300_000, 200_000], tag: 'v1' });
    await pushLayout(origin.url, 'ci/mirror-pull-fails', 'v1', image.dir);
    const layer = image.layers[0]!.digest;
    faulty.cutBlob(layer, 100_000);
    const name = `${origin.host}/ci/mirror-pull-fails:v1`;

    const out = await ensure(name, { mirror: mirror.url }, { WHARF_LOG_LEVEL: 'info' });

    assert.equal(out.code, 0, out.stdout + out.stderr);
    assert.equal(out.json.source, 'origin');
    assert.equal(out.json.digest, image.digest);
    assert.ok((await localDigests(name)).includes(image.digest));
    assert.ok(faulty.count('GET', /\/manifests\/v1$/) >= 1, 'the mirror resolved the tag');
    assert.ok(faulty.count('GET', new RegExp(`/blobs/${layer}`)) >= 1,
      'the engine pulled the layer through the mirror first');
    // ensure gave the mirror up after one retry of the engine's, rather than waiting out all
    // five attempts with their growing delays.
    assert.match(out.stderr, /broke off layer downloads 2 times/);
  });

  test('when the origin is down the mirror serves what it holds', async () => {
    const { origin, mirror, name, image } = await world('ci/origin-down');
    assert.equal((await ensure(name, { mirror: mirror.url })).code, 0);
    await dockerd.docker(['image', 'rm', name]);
    await origin.stop();

    const out = await ensure(name, { mirror: mirror.url });

    assert.equal(out.code, 0, out.stdout);
    assert.equal(out.json.source, 'mirror');
    assert.equal(out.json.digest, image.digest);
  });

  test('when mirror and origin are both down the image could not be made present', async () => {
    const { origin, mirror, name } = await world('ci/both-down-absent');
    await Promise.all([origin.stop(), mirror.close()]);

    const out = await ensure(name, { mirror: mirror.url });

    assert.equal(out.code, 1);
    const error = out.json.error as { code: string; hint?: string };
    assert.equal(error.code, 'WHARF_UPSTREAM_UNAVAILABLE');
    assert.equal(out.json.source, null);
    assert.equal(out.json.digest, null);
    assert.equal(out.json.image, name);
  });

  test('with both down, --allow-stale accepts an older local copy and says so', async () => {
    const { dir, origin, mirror, name, image } = await world('ci/both-down-stale');
    assert.equal((await ensure(name, { mirror: mirror.url })).code, 0);
    const moved = await buildImage(join(dir, 'v2'), { layers: [100_000], tag: 'v1' });
    await pushLayout(origin.url, 'ci/both-down-stale', 'v1', moved.dir);
    await Promise.all([origin.stop(), mirror.close()]);

    const strict = await ensure(name, { mirror: mirror.url });
    assert.equal(strict.code, 1);
    assert.match((strict.json.error as { hint: string }).hint, /--allow-stale/);

    const stale = await ensure(name, { mirror: mirror.url, allowStale: true });
    assert.equal(stale.code, 0);
    assert.equal(stale.json.source, 'stale-local');
    assert.equal(stale.json.digest, image.digest);
    assert.ok(stale.json.stale);
  });

  test('with both down, the hint offers the copy on the engine without calling it older',
    async () => {
      const { origin, mirror, name } = await world('ci/both-down-unknown-age');
      assert.equal((await ensure(name, { mirror: mirror.url })).code, 0);
      await Promise.all([origin.stop(), mirror.close()]);

      const out = await ensure(name, { mirror: mirror.url });

      assert.equal(out.code, 1);
      const hint = (out.json.error as { hint: string }).hint;
      assert.match(hint, /copy .*on the engine/);
      assert.match(hint, /--allow-stale/);
      assert.doesNotMatch(hint, /older|newer|outdated/);
    });

  test('a tag that moved to an image no source can deliver is stale at the local digest',
    async () => {
      const { dir, origin, mirror, name, image } = await world('ci/moved-unpullable');
      assert.equal((await ensure(name, { mirror: mirror.url })).code, 0);
      const moved = await buildImage(join(dir, 'v2'), { layers: [120_000], tag: 'v1' });
      await pushLayout(origin.url, 'ci/moved-unpullable', 'v1', moved.dir);
      // Both registries still answer for the tag, but its new layer is gone: resolving works,
      // every pull fails.
      const layer = moved.layers[0]!.digest.slice('sha256:'.length);
      const blobs = join(origin.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256');
      await rm(join(blobs, layer.slice(0, 2), layer), { recursive: true });

      const stale = await ensure(name, { mirror: mirror.url, allowStale: true });

      assert.equal(stale.code, 0, stale.stdout + stale.stderr);
      assert.equal(stale.json.source, 'stale-local');
      assert.equal(stale.json.digest, image.digest);
      assert.equal((stale.json.stale as { code: string }).code, 'WHARF_PULL_FAILED');
      assert.deepEqual(await localDigests(name), [image.digest]);
    });

  test('a pull whose stream carries an error fails with the engine message', async () => {
    const { origin, mirror, name, image } = await world('ci/broken', [150_000, 150_000]);
    const layer = image.layers[1]!.digest.slice('sha256:'.length);
    const blobs = join(origin.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256');
    await rm(join(blobs, layer.slice(0, 2), layer), { recursive: true });

    const out = await ensure(name, { mirror: mirror.url });

    assert.equal(out.code, 1);
    const error = out.json.error as { code: string; message: string };
    assert.equal(error.code, 'WHARF_PULL_FAILED');
    assert.match(error.message, /mirror pull: .*origin pull: /);
  });

  test('from an index with Windows entries the engine gets its own platform', async () => {
    const { dir, origin, mirror } = await world('ci/unused');
    const index = await buildIndex(join(dir, 'multi'), [
      { layers: [20_000], os: 'windows', osVersion: '10.0.17763.5329', foreignLayers: 1 },
      { layers: [20_000], os: 'windows', osVersion: '10.0.20348.2227', foreignLayers: 1 },
      { layers: [120_000], os: 'linux', architecture: 'amd64' },
    ], { format: 'docker', tag: 'ltsc' });
    await pushLayout(origin.url, 'ci/multi', 'ltsc', index.dir);
    const name = `${origin.host}/ci/multi:ltsc`;

    const first = await ensure(name, { mirror: mirror.url });
    const second = await ensure(name, { mirror: mirror.url });

    assert.equal(first.code, 0, first.stdout);
    assert.equal(first.json.source, 'mirror');
    assert.equal(first.json.digest, index.digest);
    assert.equal(first.json.platform, 'linux/amd64');
    assert.equal(first.json.platformDigest, index.images[2]!.digest);
    assert.ok((await localDigests(name)).includes(index.digest));
    assert.equal(second.json.source, 'local');
  });

  test('a private origin gets the credentials of docker config.json, the engine too', async () => {
    const dir = await makeTempDir('ensure-private');
    const user = { user: 'ci', password: 'hunter2-but-longer' };
    const origin = await startRegistry({ logLevel: 'error', auth: { htpasswd: user } });
    const image = await buildImage(join(dir, 'img'), { layers: [100_000], tag: 'v1' });
    await pushLayout(origin.url, 'ci/private', 'v1', image.dir, { credentials: user });
    const auth = Buffer.from(`${user.user}:${user.password}`).toString('base64');
    await writeFile(join(dockerd.dockerConfig, 'config.json'),
      JSON.stringify({ auths: { [origin.host]: { auth } } }));
    const name = `${origin.host}/ci/private:v1`;
    // The registry client reads the config of the process, as it does when run as a command.
    const saved = process.env.DOCKER_CONFIG;
    process.env.DOCKER_CONFIG = dockerd.dockerConfig;
    try {
      const out = await ensure(name, {});

      assert.equal(out.code, 0, out.stdout);
      assert.equal(out.json.source, 'origin');
      assert.ok(!out.stdout.includes(user.password) && !out.stderr.includes(user.password));
    } finally {
      if (saved === undefined) delete process.env.DOCKER_CONFIG;
      else process.env.DOCKER_CONFIG = saved;
      await rm(join(dockerd.dockerConfig, 'config.json'));
    }
  });

  test('without --json the result is one line on stdout', async () => {
    const { mirror, name } = await world('ci/line');

    const out = await ensure(name, { mirror: mirror.url, json: false });

    assert.equal(out.code, 0);
    assert.equal(out.stdout.trim().split('\n').length, 1);
    assert.match(out.stdout, /pulled from mirror in [0-9.]+ s/);
  });

  test('without --json an image already there is said to be local, as --json says', async () => {
    const { mirror, name } = await world('ci/line-local');
    assert.equal((await ensure(name, { mirror: mirror.url })).code, 0);

    const out = await ensure(name, { mirror: mirror.url, json: false });
    const json = await ensure(name, { mirror: mirror.url });

    assert.equal(out.code, 0, out.stderr);
    assert.equal(json.json.source, 'local');
    assert.match(out.stdout, /^\S+ sha256:\S+ local in [0-9.]+ s\n$/);
  });

  test('in a log, progress lines give the bytes pulled so far, never 0 B of 0 B', async () => {
    const dir = await makeTempDir('ensure-progress');
    const registry = await startRegistry({ logLevel: 'error' });
    const origin = await startFaultyOrigin(registry.url);
    const image = await buildImage(join(dir, 'v1'), { layers: [1_000_000], tag: 'v1' });
    await pushLayout(registry.url, 'ci/progress', 'v1', image.dir);
    // About two seconds of download, so that a line every 300 ms sees it move.
    origin.slowBlob(image.layers[0]!.digest, 500_000);
    const io = captureOutput();
    const reporter = createReporter({ json: false, stdout: io.stdout, stderr: io.stderr, bars: false,
      progressLineMs: 300 });
    const engine = new DockerEngine(parseEngineAddress(dockerd.host));
    const dispatcher = new Agent();

    let result: EnsureResult;
    try {
      result = await ensureImage(`${origin.host}/ci/progress:v1`, { engine, dispatcher,
        onEvent: (e) => reporter.event(e) });
      reporter.ensured(result);
    } finally {
      reporter.close();
      await Promise.all([engine.close(), dispatcher.close()]);
    }

    const progress = io.err.split('\n').filter((l) => / from origin$/.test(l));
    assert.ok(progress.length >= 1, io.err);
    for (const line of progress) {
      assert.match(line, /: [1-9][0-9.]* [KMG]?B( of [1-9][0-9.]* [KMG]?B)? from origin$/);
    }
    assert.ok(result.bytes >= image.layers[0]!.size);
    assert.ok(io.out.includes(`(${formatBytes(result.bytes)})`), io.out);
  });

  test('bad usage exits 2 and names the flag', async () => {
    const out = await ensure('Not A Reference', {});
    assert.equal(out.code, 2);
    assert.equal((out.json.error as { code: string }).code, 'WHARF_BAD_USAGE');
    const flag = await ensure('alpine:3', { mirror: 'ftp://mirror' });
    assert.equal(flag.code, 2);
    assert.match((flag.json.error as { message: string }).message, /--mirror/);
  });

  test('a --mirror without a scheme is quoted back with the form to write it in', async () => {
    const out = await ensure('alpine:3', { mirror: 'mirror.internal:5000' });

    assert.equal(out.code, 2);
    const error = out.json.error as { code: string; message: string; hint: string };
    assert.equal(error.code, 'WHARF_BAD_USAGE');
    assert.match(error.message, /^--mirror: "mirror\.internal:5000" /);
    assert.match(error.hint, /http:\/\/HOST:PORT/);
    assert.match(error.hint, /http:\/\/mirror\.internal:5000/);
  });

  test('a --mirror with credentials is refused without repeating them', async () => {
    const out = await ensure('alpine:3', { mirror: 'ci:hunter2@mirror.internal:5000' });

    assert.equal(out.code, 2);
    assert.equal((out.json.error as { code: string }).code, 'WHARF_BAD_USAGE');
    assert.ok(!out.stdout.includes('hunter2') && !out.stderr.includes('hunter2'), out.stdout);
  });
});

/** Manifest and blob GETs the mirror served, from its metrics. */
async function pulls(mirror: RunningMirror): Promise<number> {
  const manifests = await metric(mirror.url, 'wharf_requests_total', { kind: 'manifest' });
  return manifests + (await metric(mirror.url, 'wharf_requests_total', { kind: 'blob' }));
}
