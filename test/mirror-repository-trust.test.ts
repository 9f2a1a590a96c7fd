import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { request } from 'undici';
import { startFaultyOrigin } from './helpers/faulty-origin.js';
import { buildImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry } from './helpers/registry.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';
import { errorCode, get, startTestMirror } from './support/mirror.js';

const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/**
 * A blob or tag is served under a repository only as its upstream confirmed it for that
 * repository: not because another repository has it, not because another registry said so.
 */
describe('what the mirror serves is what the upstream confirmed, for that repository', () => {
  after(cleanupAll);

  test('a client of another repository joining a fetch in flight is asked about first', async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    const dir = await makeTempDir('trust');
    const image = await buildImage(join(dir, 'a'), { layers: [2_000_000], tag: 'v1' });
    const unrelated = await buildImage(join(dir, 'b'), { layers: [100_000], tag: 'v1' });
    await pushLayout(registry.url, 'team/a', 'v1', image.dir);
    await pushLayout(registry.url, 'team/b', 'v1', unrelated.dir);
    const origin = await startFaultyOrigin(registry.url);
    const mirror = await startTestMirror({ upstreams: [`origin=${origin.url}`] });
    const layer = image.layers[0]!;
    origin.slowBlob(layer.digest, 1_000_000);

    const first = request(`${mirror.url}/v2/origin/team/a/blobs/${layer.digest}`)
      .then(async (res) => Buffer.from(await res.body.arrayBuffer()));
    // The fetch for team/a is under way (two seconds at this rate) when team/b asks.
    while (mirror.mirror.inFlight === 0) await new Promise((r) => setTimeout(r, 10));
    const joined = await get(`${mirror.url}/v2/origin/team/b/blobs/${layer.digest}`);
    assert.equal(joined.status, 404);
    assert.equal(errorCode(joined.body), 'BLOB_UNKNOWN');
    const head = await get(`${mirror.url}/v2/origin/team/b/blobs/${layer.digest}`, { method: 'HEAD' });
    assert.equal(head.status, 404);
    assert.ok(origin.count('HEAD', new RegExp(`/team/b/blobs/${layer.digest}$`)) >= 1,
      'team/b was asked about at the origin');
    assert.equal(sha256(await first), layer.digest);

    // Stored now, verified for team/a alone: a HEAD under team/b still asks first.
    await mirror.mirror.settled();
    origin.resetCounters();
    const stored = await get(`${mirror.url}/v2/origin/team/b/blobs/${layer.digest}`, { method: 'HEAD' });
    assert.equal(stored.status, 404);
    assert.equal(origin.count('HEAD', new RegExp(`/team/b/blobs/${layer.digest}$`)), 1);

    // Once the origin has it under team/b too, the stored copy serves there, not a new fetch.
    await pushLayout(registry.url, 'team/b', 'v2', image.dir);
    origin.resetCounters();
    const confirmed = await get(`${mirror.url}/v2/origin/team/b/blobs/${layer.digest}`);
    assert.equal(confirmed.status, 200);
    assert.equal(sha256(confirmed.body), layer.digest);
    assert.equal(origin.count('GET', new RegExp(`/blobs/${layer.digest}$`)), 0);
  });

  test('an upstream NAME pointed at another registry forgets what the old one confirmed', async () => {
    const before = await startRegistry({ logLevel: 'error' });
    const dir = await makeTempDir('moved');
    const image = await buildImage(join(dir, 'app'), { layers: [300_000], tag: 'v1' });
    await pushLayout(before.url, 'team/app', 'v1', image.dir);
    const data = join(dir, 'data');
    const base = '/v2/corp/team/app';

    const first = await startTestMirror({ upstreams: [`corp=${before.url}`], data });
    assert.equal((await get(`${first.url}${base}/manifests/v1`)).status, 200);
    for (const blob of [image.config, ...image.layers]) {
      assert.equal((await get(`${first.url}${base}/blobs/${blob.digest}`)).status, 200);
    }
    await first.mirror.settled();
    await first.close();

    // Same NAME, same data folder, another registry that has never heard of team/app.
    const after = await startFaultyOrigin((await startRegistry({ logLevel: 'error' })).url);
    const second = await startTestMirror({ upstreams: [`corp=${after.url}`], data, tagTtlMs: 60_000 });
    const tag = await get(`${second.url}${base}/manifests/v1`);
    assert.equal(tag.status, 404);
    const byDigest = await get(`${second.url}${base}/manifests/${image.digest}`);
    assert.equal(byDigest.status, 404);
    const blob = await get(`${second.url}${base}/blobs/${image.layers[0]!.digest}`);
    assert.equal(blob.status, 404);
    assert.equal(errorCode(blob.body), 'BLOB_UNKNOWN');
    assert.ok(after.requests.length >= 3, 'the new registry was asked each time');

    // Its blobs stay in the store and serve again once the new registry confirms them.
    await pushLayout(after.url, 'team/app', 'v1', image.dir);
    after.resetCounters();
    const again = await get(`${second.url}${base}/blobs/${image.layers[0]!.digest}`);
    assert.equal(again.status, 200);
    assert.equal(after.count('GET', new RegExp(`/blobs/${image.layers[0]!.digest}$`)), 0);
  });
});
