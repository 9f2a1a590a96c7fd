import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { startFaultyOrigin, type FaultyOrigin } from './helpers/faulty-origin.js';
import { buildImage, type BuiltImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry } from './helpers/registry.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';
import { errorCode, get, metric, startTestMirror } from './support/mirror.js';
import type { RunningMirror } from '../src/mirror/server.js';

/** What clients are told when the origin says no, is slow to say anything, or is busy. */
describe('the mirror passes the origin\'s answers on in the spec\'s terms, and counts them', () => {
  let origin: FaultyOrigin;
  let mirror: RunningMirror;
  let image: BuiltImage;
  let base: string;

  before(async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    image = await buildImage(join(await makeTempDir('img'), 'app'), { layers: [1_000_000], tag: 'v1' });
    await pushLayout(registry.url, 'ci/app', 'v1', image.dir);
    origin = await startFaultyOrigin(registry.url);
    mirror = await startTestMirror({
      upstreams: [`origin=${origin.url}`],
      tagTtlMs: 0,
      tweak: (c) => (c.upstreamTimeoutMs = 800),
    });
    base = `${mirror.url}/v2/origin/ci/app`;
  });
  after(cleanupAll);

  test('an unknown tag is MANIFEST_UNKNOWN and an unknown repository NAME_UNKNOWN, both 404', async () => {
    const tag = await get(`${base}/manifests/no-such-tag`);
    assert.equal(tag.status, 404);
    assert.equal(errorCode(tag.body), 'MANIFEST_UNKNOWN');
    const repo = await get(`${mirror.url}/v2/origin/ci/no-such-repo/manifests/v1`);
    assert.equal(repo.status, 404);
    assert.match(errorCode(repo.body), /^(NAME_UNKNOWN|MANIFEST_UNKNOWN)$/);
  });

  test('an origin that rate-limits an uncached pull is TOOMANYREQUESTS, counted per upstream', async () => {
    const before = await metric(mirror.url, 'wharf_upstream_errors_total',
      { upstream: 'origin', code: 'WHARF_UPSTREAM_TOO_MANY_REQUESTS' });
    origin.failRequests('HEAD', /manifests\/v1$/, 429, { times: 1 });
    origin.failRequests('GET', /manifests\/v1$/, 429, { times: 1 });
    const res = await get(`${base}/manifests/v1`);
    assert.equal(res.status, 429);
    assert.equal(errorCode(res.body), 'TOOMANYREQUESTS');
    const after = await metric(mirror.url, 'wharf_upstream_errors_total',
      { upstream: 'origin', code: 'WHARF_UPSTREAM_TOO_MANY_REQUESTS' });
    assert.ok(after > before, `wharf_upstream_errors_total went from ${before} to ${after}`);
    origin.clearFaults();
  });

  test('an origin that takes no time to answer gets the cached tag served stale after the timeout', async () => {
    assert.equal((await get(`${base}/manifests/v1`)).status, 200);
    const stale = await metric(mirror.url, 'wharf_stale_tags_served_total');
    origin.hangRequests('HEAD', /manifests\/v1$/);
    origin.hangRequests('GET', /manifests\/v1$/);
    origin.resetCounters();
    try {
      const res = await get(`${base}/manifests/v1`);
      assert.equal(res.status, 200);
      assert.deepEqual(res.body, image.bytes);
      const hung = origin.requests.filter((r) => /manifests\/v1$/.test(r.path));
      assert.ok(hung.length >= 1 && hung.every((r) => r.status === 0), 'the origin was asked and never answered');
      assert.ok((await metric(mirror.url, 'wharf_stale_tags_served_total')) > stale);
      // An uncached tag has nothing to fall back on: the client is told the upstream is unavailable.
      origin.hangRequests('HEAD', /manifests\/v2$/);
      origin.hangRequests('GET', /manifests\/v2$/);
      const uncached = await get(`${base}/manifests/v2`);
      assert.equal(uncached.status, 503);
      assert.equal(errorCode(uncached.body), 'UNAVAILABLE');
    } finally {
      origin.clearFaults();
    }
  });

  test('a fetch in flight shows in wharf_fetches_in_flight until it ends', async () => {
    const layer = image.layers[0]!;
    origin.slowBlob(layer.digest, 500_000, { times: 1 });
    let done = false;
    const download = get(`${base}/blobs/${layer.digest}`).finally(() => (done = true));
    // Two seconds at this rate: the gauge must show the fetch while its bytes still stream.
    let seen = 0;
    while (!done && seen === 0) {
      seen = await metric(mirror.url, 'wharf_fetches_in_flight');
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.equal(seen, 1);
    assert.equal(done, false, 'seen before the download ended');
    assert.equal((await download).status, 200);
    await mirror.mirror.settled();
    assert.equal(await metric(mirror.url, 'wharf_fetches_in_flight'), 0);
  });
});
