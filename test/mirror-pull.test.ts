import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildImage, buildIndex, type BuiltImage, type BuiltIndex } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { skopeoCopy, skopeoInspectRaw, skopeoListTags } from './helpers/skopeo.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';
import { get, metric, startTestMirror } from './support/mirror.js';
import type { RunningMirror } from '../src/mirror/server.js';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('the mirror serves the pull API from its upstreams', () => {
  let origin: Registry;
  let mirror: RunningMirror;
  let image: BuiltImage;
  let windows: BuiltIndex;
  let name: string;

  before(async () => {
    origin = await startRegistry({ logLevel: 'error' });
    const dir = await makeTempDir('images');
    image = await buildImage(join(dir, 'app'), { layers: [300_000, 50_000], tag: 'v1' });
    await pushLayout(origin.url, 'ci/app', 'v1', image.dir);
    for (const tag of ['v2', 'latest']) await pushLayout(origin.url, 'ci/app', tag, image.dir);
    // A Docker manifest list as Windows base images are published: several Windows builds,
    // legacy foreign layers, and a Linux entry.
    windows = await buildIndex(
      join(dir, 'win'),
      [
        { layers: [20_000], os: 'windows', osVersion: '10.0.17763.5329', foreignLayers: 1 },
        { layers: [20_000], os: 'windows', osVersion: '10.0.20348.2227', foreignLayers: 1 },
        { layers: [20_000], os: 'windows', osVersion: '10.0.26100.1742', foreignLayers: 1 },
        { layers: [20_000], os: 'linux', architecture: 'amd64' },
      ],
      { format: 'docker', tag: 'ltsc' },
    );
    await pushLayout(origin.url, 'ci/windows', 'ltsc', windows.dir);
    mirror = await startTestMirror({ upstreams: [origin.url] });
    name = `${new URL(mirror.url).host}/${origin.host.replace(':', '_')}`;
  });
  after(cleanupAll);

  test('GET /v2/ answers with the registry API version header', async () => {
    const res = await get(`${mirror.url}/v2/`);
    assert.equal(res.status, 200);
    assert.equal(res.headers['docker-distribution-api-version'], 'registry/2.0');
  });

  test('a manifest by tag comes out byte for byte as the origin sent it', async () => {
    const res = await get(`${mirror.url}/v2/${origin.host.replace(':', '_')}/ci/app/manifests/v1`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, image.bytes);
    assert.equal(res.headers['docker-content-digest'], image.digest);
    assert.equal(res.headers['content-type'], image.mediaType);
    assert.equal(Number(res.headers['content-length']), image.bytes.length);
  });

  test('skopeo copies an image through the mirror with the origin digest', async () => {
    const out = await makeTempDir('copy');
    await skopeoCopy(`docker://${name}/ci/app:v1`, `oci:${out}:v1`);
    const raw = await skopeoInspectRaw(`docker://${name}/ci/app:v1`);
    assert.equal(sha256(raw), image.digest);
    for (const layer of image.layers) {
      const copied = await readFile(join(out, 'blobs', 'sha256', layer.digest.slice(7)));
      assert.equal(sha256(copied), layer.digest);
    }
  });

  test('a manifest by digest and HEAD requests carry digest, type and length', async () => {
    const base = `${mirror.url}/v2/${origin.host.replace(':', '_')}/ci/app`;
    const byDigest = await get(`${base}/manifests/${image.digest}`);
    assert.deepEqual(byDigest.body, image.bytes);
    const head = await get(`${base}/manifests/${image.digest}`, { method: 'HEAD' });
    assert.equal(head.status, 200);
    assert.equal(head.body.length, 0);
    assert.equal(head.headers['docker-content-digest'], image.digest);
    assert.equal(Number(head.headers['content-length']), image.bytes.length);
    const layer = image.layers[0]!;
    const blobHead = await get(`${base}/blobs/${layer.digest}`, { method: 'HEAD' });
    assert.equal(blobHead.status, 200);
    assert.equal(Number(blobHead.headers['content-length']), layer.size);
    assert.equal(blobHead.headers['docker-content-digest'], layer.digest);
  });

  test('blob Range requests get 206 with the requested bytes', async () => {
    const layer = image.layers[0]!;
    const whole = await readFile(layer.path);
    const url = `${mirror.url}/v2/${origin.host.replace(':', '_')}/ci/app/blobs/${layer.digest}`;
    await get(url); // make sure it is stored
    const part = await get(url, { headers: { range: 'bytes=100-1099' } });
    assert.equal(part.status, 206);
    assert.equal(part.headers['content-range'], `bytes 100-1099/${layer.size}`);
    assert.deepEqual(part.body, whole.subarray(100, 1100));
    const tail = await get(url, { headers: { range: 'bytes=-10' } });
    assert.deepEqual(tail.body, whole.subarray(whole.length - 10));
    const bad = await get(url, { headers: { range: `bytes=${layer.size + 5}-` } });
    assert.equal(bad.status, 416);
  });

  test('a multi-platform index with Windows entries is copied whole, digests kept', async () => {
    // An OCI layout cannot hold a Docker manifest list unconverted; a second registry can.
    const sink = await startRegistry({ logLevel: 'error' });
    const ref = `docker://${name}/ci/windows:ltsc`;
    const raw = await skopeoInspectRaw(ref);
    assert.equal(sha256(raw), windows.digest);
    assert.deepEqual(raw, windows.bytes);
    await skopeoCopy(ref, `docker://${sink.host}/copy/windows:ltsc`, ['--all', '--preserve-digests']);
    const copied = await skopeoInspectRaw(`docker://${sink.host}/copy/windows:ltsc`);
    assert.equal(sha256(copied), windows.digest);
    for (const child of windows.images) {
      const res = await get(
        `${mirror.url}/v2/${origin.host.replace(':', '_')}/ci/windows/manifests/${child.digest}`,
      );
      assert.deepEqual(res.body, child.bytes);
      assert.equal(res.headers['content-type'], child.mediaType);
    }
  });

  test('an OCI index and its OCI manifests come out byte for byte with their media types', async () => {
    const dir = await makeTempDir('oci-index');
    const index = await buildIndex(
      join(dir, 'multi'),
      [
        { layers: [10_000], os: 'linux', architecture: 'amd64' },
        { layers: [10_000], os: 'linux', architecture: 'arm64', variant: 'v8' },
        { layers: [10_000], os: 'windows', osVersion: '10.0.20348.2227' },
      ],
      { format: 'oci', tag: 'multi' },
    );
    await pushLayout(origin.url, 'ci/multi', 'multi', index.dir);
    const base = `${mirror.url}/v2/${origin.host.replace(':', '_')}/ci/multi`;
    const top = await get(`${base}/manifests/multi`);
    assert.deepEqual(top.body, index.bytes);
    assert.equal(top.headers['content-type'], 'application/vnd.oci.image.index.v1+json');
    for (const child of index.images) {
      const res = await get(`${base}/manifests/${child.digest}`);
      assert.deepEqual(res.body, child.bytes);
      assert.equal(res.headers['content-type'], 'application/vnd.oci.image.manifest.v1+json');
    }
  });

  test('a second pull of a cached tag is a hit and does not ask the origin again', async () => {
    const url = `${mirror.url}/v2/${origin.host.replace(':', '_')}/ci/app/manifests/v1`;
    const before = await metric(mirror.url, 'wharf_requests_total', { kind: 'manifest', outcome: 'hit' });
    await get(url);
    const afterHits = await metric(mirror.url, 'wharf_requests_total', { kind: 'manifest', outcome: 'hit' });
    assert.equal(afterHits, before + 1);
  });

  test('skopeo lists a repository\'s tags through the mirror as the origin has them', async () => {
    const tags = await skopeoListTags(`docker://${name}/ci/app`);
    assert.deepEqual([...tags].sort(), ['latest', 'v1', 'v2']);
  });

  test('tag lists come in pages whose next links lead back through the mirror', async () => {
    const prefix = origin.host.replace(':', '_');
    const seen: string[] = [];
    let path: string | undefined = `/v2/${prefix}/ci/app/tags/list?n=2`;
    for (let pages = 0; path; pages++) {
      assert.ok(pages < 3, 'the pages never end');
      const res = await get(`${mirror.url}${path}`);
      assert.equal(res.status, 200);
      const body = JSON.parse(res.body.toString()) as { name: string; tags: string[] };
      assert.equal(body.name, `${prefix}/ci/app`);
      assert.ok(body.tags.length <= 2);
      seen.push(...body.tags);
      const link = res.headers.link as string | undefined;
      path = link ? /^<([^>]+)>; rel="next"$/.exec(link)?.[1] : undefined;
      if (link) assert.ok(path?.startsWith(`/v2/${prefix}/ci/app/tags/list?`), link);
    }
    assert.deepEqual(seen, ['latest', 'v1', 'v2']);

    const bad = await get(`${mirror.url}/v2/${prefix}/ci/app/tags/list?n=-1`);
    assert.equal(bad.status, 400);
    const missing = await get(`${mirror.url}/v2/${prefix}/ci/nothing/tags/list`);
    assert.equal(missing.status, 404);
    assert.equal((JSON.parse(missing.body.toString()) as { errors: { code: string }[] }).errors[0]!.code, 'NAME_UNKNOWN');
  });

  test('/metrics counts bytes fetched upstream once and served from the store after', async () => {
    const m = await startTestMirror({ upstreams: [origin.url] });
    const base = `${m.url}/v2/${origin.host.replace(':', '_')}/ci/app/blobs`;
    const layer = image.layers[0]!;
    assert.equal((await get(`${base}/${layer.digest}`)).status, 200);
    await m.mirror.settled();
    assert.equal((await get(`${base}/${layer.digest}`)).status, 200);
    const upstream = origin.host.replace(':', '_');
    assert.equal(await metric(m.url, 'wharf_upstream_fetched_bytes_total', { upstream }), layer.size);
    assert.equal(await metric(m.url, 'wharf_served_bytes_total', { source: 'fetch' }), layer.size);
    assert.equal(await metric(m.url, 'wharf_served_bytes_total', { source: 'store' }), layer.size);
    assert.equal(await metric(m.url, 'wharf_requests_total', { kind: 'blob', outcome: 'miss' }), 1);
    assert.equal(await metric(m.url, 'wharf_requests_total', { kind: 'blob', outcome: 'hit' }), 1);
    assert.equal(await metric(m.url, 'wharf_fetches_in_flight'), 0);
    assert.ok(await metric(m.url, 'wharf_store_bytes') >= layer.size);
    assert.equal((await get(`${m.url}/healthz`)).status, 200);
  });

  test('pushes are refused as unsupported', async () => {
    const { request } = await import('undici');
    const res = await request(
      `${mirror.url}/v2/${origin.host.replace(':', '_')}/ci/app/blobs/uploads/`,
      { method: 'POST' },
    );
    const body = (await res.body.json()) as { errors: { code: string }[] };
    assert.equal(res.statusCode, 405);
    assert.equal(body.errors[0]!.code, 'UNSUPPORTED');
  });
});
