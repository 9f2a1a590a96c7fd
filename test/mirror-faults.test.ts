import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readdir, readFile } from 'node:fs/promises';
import { createServer, request as httpRequest } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { request } from 'undici';
import { startFaultyOrigin, type FaultyOrigin } from './helpers/faulty-origin.js';
import { buildImage, type BuiltImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { cleanupAll, makeTempDir, registerCleanup } from './helpers/tmp.js';
import { errorCode, get, metric, startTestMirror } from './support/mirror.js';
import type { RunningMirror } from '../src/mirror/server.js';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** GETs a URL and reads the whole body; rejects when the connection breaks mid-body. */
async function download(url: string): Promise<{ status: number; body: Buffer }> {
  const res = await request(url);
  const body = Buffer.from(await res.body.arrayBuffer());
  return { status: res.statusCode, body };
}

/** GET with the path sent exactly as written: URL parsers would normalise dot segments. */
function rawGet(base: string, path: string): Promise<{ status: number; body: Buffer }> {
  const u = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: u.hostname, port: u.port, path }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks) }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('the mirror under faults and bad input', () => {
  let registry: Registry;
  let origin: FaultyOrigin;
  let image: BuiltImage;
  let mirror: RunningMirror;
  let data: string;
  let base: string;

  before(async () => {
    registry = await startRegistry({ logLevel: 'error' });
    image = await buildImage(join(await makeTempDir('img'), 'app'), { layers: [1_500_000, 200_000], tag: 'v1' });
    await pushLayout(registry.url, 'ci/app', 'v1', image.dir);
    origin = await startFaultyOrigin(registry.url);
    data = join(await makeTempDir('data'), 'store');
    mirror = await startTestMirror({ upstreams: [`origin=${origin.url}`], data, tagTtlMs: 0 });
    base = `${mirror.url}/v2/origin/ci/app`;
  });
  beforeEach(() => origin.clearFaults());
  after(cleanupAll);

  test('an origin cut off mid-blob breaks the client stream and stores nothing', async () => {
    const layer = image.layers[0]!;
    origin.cutBlob(layer.digest, 300_000, { times: 1 });
    await assert.rejects(download(`${base}/blobs/${layer.digest}`));
    await mirror.mirror.settled();
    assert.equal(mirror.mirror.index.getBlob(layer.digest), undefined);
    assert.deepEqual(await readdir(join(data, 'tmp')), []);

    const again = await download(`${base}/blobs/${layer.digest}`);
    assert.equal(again.status, 200);
    assert.equal(sha256(again.body), layer.digest);
    await mirror.mirror.settled();
    assert.ok(mirror.mirror.index.getBlob(layer.digest));
  });

  test('an origin sending wrong bytes for a digest is never served complete or stored', async () => {
    const layer = image.layers[1]!;
    origin.corruptBlob(layer.digest, { times: 1 });
    await assert.rejects(download(`${base}/blobs/${layer.digest}`));
    await mirror.mirror.settled();
    assert.equal(mirror.mirror.index.getBlob(layer.digest), undefined);
    assert.ok(
      (await metric(mirror.url, 'wharf_fetch_failures_total', { reason: 'WHARF_UPSTREAM_DIGEST_MISMATCH' })) >= 1,
    );
    const again = await download(`${base}/blobs/${layer.digest}`);
    assert.equal(sha256(again.body), layer.digest);
  });

  test('an origin sending an empty body for a digest gets no complete-looking empty blob through', async () => {
    const other = await buildImage(join(await makeTempDir('img'), 'empty'), { layers: [300_000], tag: 'v1' });
    await pushLayout(registry.url, 'ci/empty', 'v1', other.dir);
    const layer = other.layers[0]!;
    origin.emptyBlob(layer.digest, { times: 1 });
    const url = `${mirror.url}/v2/origin/ci/empty/blobs/${layer.digest}`;

    // With no byte to hold back, the headers themselves wait for the digest check.
    const res = await get(url);
    assert.notEqual(res.status, 200, 'an empty body for a non-empty digest must not be a 200');
    assert.equal(res.status, 502);
    assert.equal(mirror.mirror.index.getBlob(layer.digest), undefined);
    const again = await download(url);
    assert.equal(sha256(again.body), layer.digest);
  });

  test('a range of a blob still being fetched is completed only once the blob verified', async () => {
    const other = await buildImage(join(await makeTempDir('img'), 'ranged'), { layers: [1_000_000], tag: 'v1' });
    await pushLayout(registry.url, 'ci/ranged', 'v1', other.dir);
    const layer = other.layers[0]!;
    origin.corruptBlob(layer.digest, { times: 1 });
    const url = `${mirror.url}/v2/origin/ci/ranged/blobs/${layer.digest}`;

    // The first 1000 bytes arrive long before the digest can be checked.
    const ranged = request(url, { headers: { range: 'bytes=0-999' } })
      .then(async (res) => Buffer.from(await res.body.arrayBuffer()));
    await assert.rejects(ranged, 'a range of wrong bytes must not complete');
    assert.equal(mirror.mirror.index.getBlob(layer.digest), undefined);

    const res = await request(url, { headers: { range: 'bytes=0-999' } });
    const body = Buffer.from(await res.body.arrayBuffer());
    assert.equal(res.statusCode, 206);
    assert.deepEqual(body, (await readFile(join(other.dir, 'blobs', 'sha256',
      layer.digest.slice(7)))).subarray(0, 1000));
  });

  test('with the origin down, a cached tag is served stale and digests still work', async () => {
    const first = await get(`${base}/manifests/v1`);
    assert.equal(first.status, 200);
    for (const blob of [image.config, ...image.layers]) await download(`${base}/blobs/${blob.digest}`);

    await origin.down();
    try {
      const stale = await get(`${base}/manifests/v1`);
      assert.equal(stale.status, 200);
      assert.equal(stale.headers['docker-content-digest'], image.digest);
      assert.ok((await metric(mirror.url, 'wharf_stale_tags_served_total')) >= 1);
      const byDigest = await get(`${base}/manifests/${image.digest}`);
      assert.deepEqual(byDigest.body, image.bytes);
      for (const blob of [image.config, ...image.layers]) {
        const res = await download(`${base}/blobs/${blob.digest}`);
        assert.equal(sha256(res.body), blob.digest);
      }
      const unknown = await get(`${base}/manifests/never-pulled`);
      assert.equal(unknown.status, 503);
      assert.equal(errorCode(unknown.body), 'UNAVAILABLE');
      // The tag list falls back to the tags the mirror has seen at the origin.
      const tags = await get(`${base}/tags/list`);
      assert.equal(tags.status, 200);
      assert.deepEqual((JSON.parse(tags.body.toString()) as { tags: string[] }).tags, ['v1']);
      const neverListed = await get(`${mirror.url}/v2/origin/ci/other/tags/list`);
      assert.equal(neverListed.status, 503);
    } finally {
      await origin.up();
    }
  });

  test('an origin answering 503 or 429 also gets the cached tag served stale', async () => {
    await get(`${base}/manifests/v1`);
    for (const status of [503, 429]) {
      origin.failRequests('HEAD', /manifests\/v1$/, status);
      origin.failRequests('GET', /manifests\/v1$/, status);
      const res = await get(`${base}/manifests/v1`);
      assert.equal(res.status, 200, `with ${status}`);
      assert.deepEqual(res.body, image.bytes);
      origin.clearFaults();
    }
  });

  test('a blob is not served under a repository the origin does not say has it', async () => {
    const layer = image.layers[0]!;
    await download(`${base}/blobs/${layer.digest}`);
    const other = await get(`${mirror.url}/v2/origin/other/repo/blobs/${layer.digest}`);
    assert.equal(other.status, 404);
    assert.equal(errorCode(other.body), 'BLOB_UNKNOWN');
  });

  test('malformed names, references and digests are refused before any upstream is asked', async () => {
    origin.resetCounters();
    const cases: [string, number, string][] = [
      ['/v2/origin/CI/App/manifests/v1', 400, 'NAME_INVALID'],
      ['/v2/origin/ci/app/manifests/-bad', 400, 'MANIFEST_INVALID'],
      ['/v2/origin/ci/app/manifests/sha256:1234', 400, 'DIGEST_INVALID'],
      ['/v2/origin/ci/app/blobs/sha256:zz', 400, 'DIGEST_INVALID'],
      ['/v2/origin/ci/app/blobs/md5:d41d8cd98f00b204e9800998ecf8427e', 400, 'DIGEST_INVALID'],
      ['/v2/origin/ci/..%2f..%2fetc/manifests/v1', 400, 'NAME_INVALID'],
      ['/v2/origin/ci/%2e%2e/app/manifests/v1', 400, 'NAME_INVALID'],
      ['/v2/origin/ci//app/manifests/v1', 400, 'NAME_INVALID'],
      ['/v2/x/manifests/v1?ns=elsewhere.example', 404, 'NAME_UNKNOWN'],
    ];
    for (const [path, status, code] of cases) {
      const res = await rawGet(mirror.url, path);
      assert.equal(res.status, status, path);
      assert.equal(errorCode(res.body), code, path);
    }
    assert.equal(origin.requests.length, 0, JSON.stringify(origin.requests));
  });

  test('a path that climbs out of /v2 by dot segments does not reach the store or an upstream', async () => {
    origin.resetCounters();
    const { status: res } = await rawGet(
      mirror.url,
      `/v2/origin/../../../etc/passwd/blobs/${image.layers[0]!.digest}`,
    );
    assert.ok(res === 400 || res === 404, `status ${res}`);
    assert.equal(origin.requests.length, 0);
  });

  test('a blob HEAD the origin answers without a length is passed on without a made-up one', async () => {
    const layer = image.layers[0]!;
    const terse = createServer((req, res) => {
      if (req.url === '/v2/') return res.writeHead(200).end('{}');
      // A 200 to a HEAD that names the digest but leaves its length out, as some CDNs do.
      res.writeHead(200, { 'docker-content-digest': layer.digest });
      res.end();
    });
    await new Promise<void>((r) => terse.listen(0, '127.0.0.1', r));
    registerCleanup(() => new Promise((r) => terse.close(r)));
    const port = (terse.address() as AddressInfo).port;
    const m = await startTestMirror({ upstreams: [`terse=http://127.0.0.1:${port}`] });

    const res = await request(`${m.url}/v2/terse/ci/app/blobs/${layer.digest}`, { method: 'HEAD' });
    await res.body.dump();

    assert.equal(res.statusCode, 200);
    assert.equal(res.headers['docker-content-digest'], layer.digest);
    assert.notEqual(res.headers['content-length'], '0', 'a length the origin never gave');
  });

  test('an origin that lies about a manifest digest gets DIGEST_INVALID and nothing is stored', async () => {
    const real = image.bytes;
    const lie = Buffer.from(real.toString().replace('"schemaVersion": 2', '"schemaVersion":2'));
    const liar = createServer((req, res) => {
      if (req.url === '/v2/') return res.writeHead(200).end('{}');
      res.writeHead(200, {
        'content-type': image.mediaType,
        'docker-content-digest': image.digest,
        'content-length': lie.length,
      });
      res.end(req.method === 'HEAD' ? undefined : lie);
    });
    await new Promise<void>((r) => liar.listen(0, '127.0.0.1', r));
    registerCleanup(() => new Promise((r) => liar.close(r)));
    const port = (liar.address() as AddressInfo).port;
    const m = await startTestMirror({ upstreams: [`liar=http://127.0.0.1:${port}`] });
    for (const ref of ['v1', image.digest]) {
      const res = await get(`${m.url}/v2/liar/ci/app/manifests/${ref}`);
      assert.equal(res.status, 502, ref);
      assert.equal(errorCode(res.body), 'DIGEST_INVALID');
    }
    assert.equal(m.mirror.index.getBlob(image.digest), undefined);
  });

  test('a tag is revalidated with one HEAD at most once per tagTtl', async () => {
    const m = await startTestMirror({ upstreams: [`origin=${origin.url}`], tagTtlMs: 400 });
    const url = `${m.url}/v2/origin/ci/app/manifests/v1`;
    await get(url);
    origin.resetCounters();
    for (let i = 0; i < 5; i++) assert.equal((await get(url)).status, 200);
    assert.equal(origin.requests.length, 0, 'asked the origin within tagTtl');
    await new Promise((r) => setTimeout(r, 450));
    await get(url);
    await get(url);
    assert.deepEqual(
      origin.requests.map((r) => `${r.method} ${r.path}`),
      ['HEAD /v2/ci/app/manifests/v1'],
    );
    assert.equal(await metric(m.url, 'wharf_requests_total', { kind: 'manifest', outcome: 'revalidated' }), 1);
  });

  test('while the origin fails, a tag is asked after at most once per tagTtl too', async () => {
    const m = await startTestMirror({ upstreams: [`origin=${origin.url}`], tagTtlMs: 400 });
    const url = `${m.url}/v2/origin/ci/app/manifests/v1`;
    await get(url);
    await new Promise((r) => setTimeout(r, 450));
    origin.failRequests('HEAD', /\/manifests\/v1$/, 503);
    origin.resetCounters();
    for (let i = 0; i < 5; i++) {
      const res = await get(url);
      assert.equal(res.status, 200);
      assert.equal(res.headers['docker-content-digest'], image.digest);
    }
    assert.equal(origin.count('HEAD', /\/manifests\/v1$/), 1, 'one HEAD for five stale answers');
    assert.equal(await metric(m.url, 'wharf_requests_total', { kind: 'manifest', outcome: 'stale' }), 5);

    await new Promise((r) => setTimeout(r, 450));
    origin.clearFaults();
    await get(url);
    assert.equal(origin.count('HEAD', /\/manifests\/v1$/), 2, 'asked again after tagTtl');
    assert.equal(await metric(m.url, 'wharf_requests_total', { kind: 'manifest', outcome: 'revalidated' }), 1);
  });

  test('a mirror started cold with the origin down says so, and serves once it is back', async () => {
    await origin.down();
    let m: Awaited<ReturnType<typeof startTestMirror>>;
    try {
      m = await startTestMirror({ upstreams: [`origin=${origin.url}`], tagTtlMs: 0 });
      assert.equal((await get(`${m.url}/healthz`)).status, 200);
      const down = await get(`${m.url}/v2/origin/ci/app/manifests/v1`);
      assert.equal(down.status, 503);
      assert.equal(errorCode(down.body), 'UNAVAILABLE');
    } finally {
      await origin.up();
    }

    const res = await get(`${m.url}/v2/origin/ci/app/manifests/v1`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, image.bytes);
    const layer = image.layers[0]!;
    const blob = await download(`${m.url}/v2/origin/ci/app/blobs/${layer.digest}`);
    assert.equal(sha256(blob.body), layer.digest);
  });

  test('the mirror starts and serves its store while the origin is down', async () => {
    await get(`${base}/manifests/v1`);
    await mirror.close();
    await origin.down();
    try {
      mirror = await startTestMirror({ upstreams: [`origin=${origin.url}`], data, tagTtlMs: 0 });
      base = `${mirror.url}/v2/origin/ci/app`;
      const res = await get(`${base}/manifests/v1`);
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, image.bytes);
      const layer = image.layers[0]!;
      const blob = await download(`${base}/blobs/${layer.digest}`);
      assert.deepEqual(blob.body, await readFile(layer.path));
    } finally {
      await origin.up();
    }
  });
});
