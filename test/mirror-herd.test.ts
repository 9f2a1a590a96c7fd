import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { startFaultyOrigin, type FaultyOrigin } from './helpers/faulty-origin.js';
import { buildImage, type BuiltImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry } from './helpers/registry.js';
import { skopeoCopy } from './helpers/skopeo.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';
import { metric, startTestMirror } from './support/mirror.js';
import type { RunningMirror } from '../src/mirror/server.js';

const CLIENTS = 8;
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

describe('a herd of clients on a cold image', () => {
  let origin: FaultyOrigin;
  let mirror: RunningMirror;
  let image: BuiltImage;

  before(async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    image = await buildImage(join(await makeTempDir('img'), 'app'), {
      layers: [4_000_000, 2_000_000, 1_000_000],
      tag: 'v1',
    });
    await pushLayout(registry.url, 'ci/herd', 'v1', image.dir);
    origin = await startFaultyOrigin(registry.url);
    mirror = await startTestMirror({ upstreams: [`origin=${origin.url}`] });
  });
  after(cleanupAll);

  test('8 skopeo clients at once: the origin sends each blob once, every client gets it right', async () => {
    // A slow origin keeps every fetch in flight while the other clients arrive.
    for (const layer of image.layers) origin.slowBlob(layer.digest, 4_000_000);
    origin.resetCounters();
    const host = new URL(mirror.url).host;
    const outs = await Promise.all(
      Array.from({ length: CLIENTS }, async (_, i) => {
        const out = await makeTempDir(`client${i}`);
        await skopeoCopy(`docker://${host}/origin/ci/herd:v1`, `oci:${out}:v1`);
        return out;
      }),
    );
    for (const blob of [image.config, ...image.layers]) {
      const gets = origin.count('GET', new RegExp(`/blobs/${blob.digest}$`));
      assert.equal(gets, 1, `origin GETs of ${blob.digest}`);
      assert.equal(origin.blobBytesSent(blob.digest), blob.size);
    }
    for (const out of outs) {
      for (const layer of image.layers) {
        const copied = await readFile(join(out, 'blobs', 'sha256', layer.digest.slice(7)));
        assert.equal(sha256(copied), layer.digest);
      }
    }
    assert.ok((await metric(mirror.url, 'wharf_requests_total', { kind: 'blob', outcome: 'coalesced' })) > 0);
  });

  test('clients joining a fetch in flight stream it before it completes', async () => {
    const fresh = await buildImage(join(await makeTempDir('img2'), 'big'), { layers: [3_000_000], tag: 'v1' });
    const registry = await startRegistry({ logLevel: 'error' });
    await pushLayout(registry.url, 'ci/big', 'v1', fresh.dir);
    const slow = await startFaultyOrigin(registry.url);
    const m = await startTestMirror({ upstreams: [`slow=${slow.url}`] });
    const layer = fresh.layers[0]!;
    slow.slowBlob(layer.digest, 1_000_000);
    const url = `${m.url}/v2/slow/ci/big/blobs/${layer.digest}`;

    // Each client must get bytes while the origin is still sending: none waits for the whole
    // blob. The origin's own byte count says how far it was when a client's first chunk came.
    const results = await Promise.all(
      Array.from({ length: CLIENTS }, async () => {
        const res = await request(url);
        let originAtFirstChunk = -1;
        const chunks: Buffer[] = [];
        for await (const chunk of res.body) {
          if (originAtFirstChunk < 0) originAtFirstChunk = slow.blobBytesSent(layer.digest);
          chunks.push(chunk as Buffer);
        }
        return { originAtFirstChunk, body: Buffer.concat(chunks) };
      }),
    );
    for (const r of results) {
      assert.equal(sha256(r.body), layer.digest);
      assert.ok(r.originAtFirstChunk < layer.size, `origin had sent ${r.originAtFirstChunk} bytes`);
    }
    assert.equal(slow.count('GET', new RegExp(`/blobs/${layer.digest}$`)), 1);
  });
  test('a herd on a fetch that turns out corrupt: every client sees a broken transfer', async () => {
    const fresh = await buildImage(join(await makeTempDir('img3'), 'bad'), { layers: [2_000_000], tag: 'v1' });
    const registry = await startRegistry({ logLevel: 'error' });
    await pushLayout(registry.url, 'ci/bad', 'v1', fresh.dir);
    const bad = await startFaultyOrigin(registry.url);
    const m = await startTestMirror({ upstreams: [`bad=${bad.url}`] });
    const layer = fresh.layers[0]!;
    // Corrupt every time: clients that come after one fetch failed start another, as bad.
    bad.corruptBlob(layer.digest);
    const url = `${m.url}/v2/bad/ci/bad/blobs/${layer.digest}`;

    const outcomes = await Promise.allSettled(
      Array.from({ length: CLIENTS }, async () => {
        const res = await request(url);
        return Buffer.from(await res.body.arrayBuffer());
      }),
    );
    for (const o of outcomes) {
      assert.equal(o.status, 'rejected', 'a client got a complete-looking corrupt blob');
    }
    assert.ok(bad.count('GET', new RegExp(`/blobs/${layer.digest}$`)) < CLIENTS,
      'clients shared fetches');
    await m.mirror.settled();
    assert.equal(m.mirror.index.getBlob(layer.digest), undefined);

    bad.clearFaults();
    const res = await request(url);
    assert.equal(sha256(Buffer.from(await res.body.arrayBuffer())), layer.digest);
  });
});
