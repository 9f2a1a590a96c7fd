import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';

import { startDockerd } from './helpers/dockerd.js';
import { startFaultyOrigin } from './helpers/faulty-origin.js';
import { buildImage, buildIndex } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry } from './helpers/registry.js';
import { startRelay } from './helpers/relay.js';
import { skopeoCopy, skopeoInspectRaw } from './helpers/skopeo.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';
import { startTokenServer } from './helpers/token-server.js';

const run = promisify(execFile);
const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');

async function get(url: string, headers: Record<string, string> = {}) {
  const res = await fetch(url, { headers: { accept: MANIFEST_ACCEPT, ...headers } });
  return { status: res.status, headers: res.headers, body: Buffer.from(await res.arrayBuffer()) };
}

function sha256(data: Buffer): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

describe('test helpers', () => {
  after(cleanupAll);

  test('a built image pushed to a registry comes back byte for byte', async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    const image = await buildImage(await makeTempDir('img'), { layers: [50_000, 1_000] });

    const pushed = await pushLayout(registry.url, 'team/app', 'v1', image.dir);

    assert.equal(pushed.digest, image.digest);
    const manifest = await get(`${registry.url}/v2/team/app/manifests/${image.digest}`);
    assert.equal(manifest.status, 200);
    assert.deepEqual(manifest.body, image.bytes);
    const layer = image.layers[0]!;
    const blob = await get(`${registry.url}/v2/team/app/blobs/${layer.digest}`);
    assert.equal(sha256(blob.body), layer.digest);
    const layerBytes = blob.body.length + image.layers[1]!.size;
    assert.equal(image.totalSize, image.size + image.config.size + layerBytes);
  });

  test('a htpasswd registry refuses anonymous clients and accepts its user', async () => {
    const user = { user: 'ci', password: 's3cret' };
    const registry = await startRegistry({ auth: { htpasswd: user }, logLevel: 'error' });
    const image = await buildImage(await makeTempDir('img'), { layers: [1_000] });

    assert.equal((await get(`${registry.url}/v2/`)).status, 401);
    await assert.rejects(pushLayout(registry.url, 'private/app', 'v1', image.dir));
    const pushed = await pushLayout(registry.url, 'private/app', 'v1', image.dir, {
      credentials: user,
    });

    assert.equal(pushed.digest, image.digest);
  });

  test('a token registry accepts a token that the token server issued', async () => {
    const tokens = await startTokenServer({ user: 'ci', password: 's3cret' });
    const registry = await startRegistry({ auth: { token: tokens }, logLevel: 'error' });
    const image = await buildImage(await makeTempDir('img'), { layers: [1_000] });
    await pushLayout(registry.url, 'private/app', 'v1', image.dir, {
      credentials: { user: 'ci', password: 's3cret' },
    });

    const challenge = await get(`${registry.url}/v2/private/app/manifests/v1`);
    assert.equal(challenge.status, 401);
    assert.match(challenge.headers.get('www-authenticate') ?? '', /^Bearer realm=/);
    const basic = `Basic ${Buffer.from('ci:s3cret').toString('base64')}`;
    const scope = 'repository:private/app:pull';
    const before = tokens.tokenRequests;
    const tokenUrl = `${tokens.realm}?service=${tokens.service}&scope=${scope}`;
    const answer = await fetch(tokenUrl, { headers: { authorization: basic } });
    const { token } = (await answer.json()) as { token: string };
    const manifest = await get(`${registry.url}/v2/private/app/manifests/v1`, {
      authorization: `Bearer ${token}`,
    });

    assert.equal(manifest.status, 200);
    assert.deepEqual(manifest.body, image.bytes);
    assert.equal(tokens.tokenRequests, before + 1);
    const wrong = `Basic ${Buffer.from('ci:nope').toString('base64')}`;
    assert.equal((await fetch(tokenUrl, { headers: { authorization: wrong } })).status, 401);
  });

  test('the token server grants anonymous pulls only when told to', async () => {
    const closed = await startTokenServer();
    const open = await startTokenServer({ anonymousPull: true });
    const scope = 'scope=repository:public/app:pull,push';

    await fetch(`${closed.realm}?${scope}`);
    await fetch(`${open.realm}?${scope}`);

    assert.deepEqual(closed.requests[0]?.granted, []);
    assert.deepEqual(open.requests[0]?.granted, [
      { type: 'repository', name: 'public/app', actions: ['pull'] },
    ]);
  });

  test('a Windows multi-platform index keeps its digest, foreign layers stay out', async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    const index = await buildIndex(await makeTempDir('win'), [
      { os: 'linux', architecture: 'amd64', layers: [1_000] },
      { os: 'windows', osVersion: '10.0.17763.5576', layers: [1_000], foreignLayers: 1 },
      { os: 'windows', osVersion: '10.0.20348.2113', layers: [1_000], foreignLayers: 1 },
      { os: 'windows', osVersion: '10.0.26100.1742', layers: [1_000], foreignLayers: 1 },
    ], { format: 'docker', tag: 'ltsc' });

    await pushLayout(registry.url, 'windows/servercore', 'ltsc', index.dir);

    const res = await get(`${registry.url}/v2/windows/servercore/manifests/ltsc`);
    assert.equal(res.headers.get('docker-content-digest'), index.digest);
    assert.deepEqual(res.body, index.bytes);
    const foreign = index.images[1]!.layers[0]!;
    assert.equal(foreign.mediaType, 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip');
    const blob = await fetch(`${registry.url}/v2/windows/servercore/blobs/${foreign.digest}`);
    assert.equal(blob.status, 404);
  });

  test('skopeo copies an OCI index from a layout and keeps its digest', async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    const index = await buildIndex(await makeTempDir('oci'), [
      { layers: [1_000] },
      { os: 'windows', osVersion: '10.0.20348.2113', layers: [1_000], foreignLayers: 1 },
    ], { tag: 'v1' });

    await skopeoCopy(`oci:${index.dir}:v1`, `docker://${registry.host}/copy/app:v1`, [
      '--all', '--preserve-digests',
    ]);

    const raw = await skopeoInspectRaw(`docker://${registry.host}/copy/app:v1`);
    assert.equal(sha256(raw), index.digest);
  });

  test('a proxy-mode registry pulls through from its private remote', async () => {
    const user = { user: 'ci', password: 's3cret' };
    const tokens = await startTokenServer(user);
    const origin = await startRegistry({ auth: { token: tokens }, logLevel: 'error' });
    const image = await buildImage(await makeTempDir('img'), { layers: [1_000] });
    await pushLayout(origin.url, 'library/app', 'v1', image.dir, { credentials: user });
    const cache = await startRegistry({
      proxyRemoteUrl: origin.url, proxyUsername: user.user, proxyPassword: user.password,
      logLevel: 'error',
    });

    const res = await get(`${cache.url}/v2/library/app/manifests/v1`);

    assert.equal(res.status, 200);
    assert.deepEqual(res.body, image.bytes);
  });

  test('dockerd starts, pulls from the registry and records the pushed digest', async () => {
    const [registry, dockerd] = await Promise.all([
      startRegistry({ logLevel: 'error' }),
      startDockerd(),
    ]);
    const image = await buildImage(await makeTempDir('img'), { layers: [20_000] });
    await pushLayout(registry.url, 'ci/app', 'v1', image.dir);

    const version = await dockerd.docker(['version', '--format', '{{.Server.Version}}']);
    await dockerd.docker(['pull', '-q', `${registry.host}/ci/app:v1`]);
    const digests = await dockerd.docker([
      'image', 'inspect', '--format', '{{json .RepoDigests}}', `${registry.host}/ci/app:v1`,
    ]);
    const ctr = await run('ctr', ['-a', dockerd.containerdSocket, 'version']);
    const containerdPid = Number(await readFile(
      join(dockerd.execRoot, 'containerd', 'containerd.pid'), 'utf8'));
    await dockerd.stop();

    assert.match(version, /^20\./);
    assert.deepEqual(JSON.parse(digests), [`${registry.host}/ci/app@${image.digest}`]);
    assert.match(ctr.stdout, /Server:/);
    assert.throws(() => process.kill(containerdPid, 0), /ESRCH/);
  });

  test('the relay shares one bandwidth limit between connections', async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    const image = await buildImage(await makeTempDir('img'), {
      layers: [1_000_000, 1_000_000], compress: false,
    });
    await pushLayout(registry.url, 'big/app', 'v1', image.dir);
    const relay = await startRelay(registry.port, { bytesPerSecond: 4_000_000 });

    const started = performance.now();
    const bodies = await Promise.all(image.layers.map((layer) =>
      get(`${relay.url}/v2/big/app/blobs/${layer.digest}`)));
    const seconds = (performance.now() - started) / 1000;

    assert.deepEqual(bodies.map((b) => sha256(b.body)), image.layers.map((l) => l.digest));
    assert.ok(relay.bytesToClient > 2_000_000);
    // 2 MB at 4 MB/s: about half a second, and never faster than the limit allows.
    assert.ok(seconds > 0.4 && seconds < 2, `took ${seconds} s`);
  });

  test('the faulty origin cuts, corrupts, counts and goes down', async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    const image = await buildImage(await makeTempDir('img'), {
      layers: [200_000], compress: false,
    });
    await pushLayout(registry.url, 'ci/app', 'v1', image.dir);
    const origin = await startFaultyOrigin(registry.url);
    const layer = image.layers[0]!;
    const blobUrl = `${origin.url}/v2/ci/app/blobs/${layer.digest}`;

    origin.cutBlob(layer.digest, 10_000, { times: 1 });
    await assert.rejects(get(blobUrl));
    assert.equal(origin.blobBytesSent(layer.digest), 10_000);
    origin.corruptBlob(layer.digest, { times: 1 });
    const corrupt = await get(blobUrl);
    assert.equal(corrupt.body.length, layer.size);
    assert.notEqual(sha256(corrupt.body), layer.digest);
    assert.equal(sha256((await get(blobUrl)).body), layer.digest);
    origin.failRequests('GET', /\/manifests\//, 503, { times: 1 });
    assert.equal((await get(`${origin.url}/v2/ci/app/manifests/v1`)).status, 503);
    assert.equal((await get(`${origin.url}/v2/ci/app/manifests/v1`)).status, 200);
    assert.equal(origin.count('GET', /\/blobs\//), 3);

    await origin.down();
    // The first request may land on a pooled connection that down() reset; a new one
    // is refused like an unreachable host.
    await assert.rejects(fetch(`${origin.url}/v2/`));
    const refused = (err: Error & { cause?: { code?: string } }) =>
      err.cause?.code === 'ECONNREFUSED';
    await assert.rejects(fetch(`${origin.url}/v2/`), refused);
    await origin.up();
    assert.equal((await get(`${origin.url}/v2/`)).status, 200);
  });
});
