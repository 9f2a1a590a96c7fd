import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, open, readdir, rm, stat, statfs, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import Database from 'better-sqlite3';
import { request } from 'undici';
import { startFaultyOrigin, type FaultyOrigin } from './helpers/faulty-origin.js';
import { buildImage, buildIndex, type BuiltImage, type LayerInfo } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { skopeoCopy } from './helpers/skopeo.js';
import { cleanupAll, makeTempDir, registerCleanup } from './helpers/tmp.js';
import { waitUntil } from './helpers/wait.js';
import { get, metric, startTestMirror } from './support/mirror.js';
import { startMirrorProcess } from './support/mirror-process.js';
import { BlobStore } from '../src/store/blob-store.js';
import { evict } from '../src/store/eviction.js';
import { IndexDb } from '../src/store/index-db.js';
import { verifyFile } from '../src/store/recovery.js';
import type { RunningMirror } from '../src/mirror/server.js';
import type { WharfError } from '../src/errors.js';

const run = promisify(execFile);
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

async function download(url: string): Promise<Buffer> {
  const res = await request(url);
  const body = Buffer.from(await res.body.arrayBuffer());
  assert.equal(res.statusCode, 200, `${url}: ${body.toString().slice(0, 200)}`);
  return body;
}

/** Pulls an image the way a client does: manifest by tag, then config and layers. */
async function pull(mirrorUrl: string, name: string, image: BuiltImage): Promise<void> {
  const manifest = await download(`${mirrorUrl}/v2/${name}/manifests/${image.tag}`);
  assert.equal(sha256(manifest), image.digest);
  for (const blob of [image.config, ...image.layers]) {
    assert.equal(sha256(await download(`${mirrorUrl}/v2/${name}/blobs/${blob.digest}`)), blob.digest);
  }
}

/** Sum of the committed blob files, straight from the disk. */
async function bytesOnDisk(data: string): Promise<number> {
  const store = new BlobStore(data);
  let total = 0;
  for await (const digest of store.list()) total += (await stat(store.path(digest))).size;
  return total;
}

/**
 * Once the fetches have settled, the blob has no row and nothing of it is left in the temp
 * folder: neither a partial file nor a verified one that could not be committed.
 */
async function expectUnstored(mirror: RunningMirror, data: string, digest: string) {
  await mirror.mirror.settled();
  assert.equal(mirror.mirror.index.getBlob(digest), undefined);
  await waitUntil(async () => (await readdir(join(data, 'tmp'))).length === 0, {
    what: 'the temp folder to be empty',
  });
}

describe('the store stays within its budget and keeps pinned images', () => {
  let registry: Registry;
  const images: BuiltImage[] = [];

  before(async () => {
    registry = await startRegistry({ logLevel: 'error' });
    const dir = await makeTempDir('imgs');
    for (let i = 0; i < 8; i++) {
      const image = await buildImage(join(dir, `img${i}`), { layers: [250_000, 150_000], tag: 'v1' });
      await pushLayout(registry.url, `ci/img${i}`, 'v1', image.dir);
      images.push(image);
    }
  });
  after(cleanupAll);

  test('churning through several times the budget keeps the store under it, pins intact', async () => {
    const maxSize = 1_300_000;
    const data = join(await makeTempDir('churn'), 'data');
    const mirror = await startTestMirror({
      upstreams: [`origin=${registry.url}`],
      data,
      tweak: (c) => {
        c.cache.maxSizeBytes = maxSize;
        c.cache.pins = [{ image: 'origin/ci/img0:v1' }];
      },
    });
    const pinned = images[0]!;
    const pinnedDigests = [pinned.digest, pinned.config.digest, ...pinned.layers.map((l) => l.digest)];
    await waitUntil(
      () => pinnedDigests.every((d) => mirror.mirror.index.getBlob(d)),
      { what: 'the pinned image to be fetched at start-up' },
    );

    for (let round = 0; round < 3; round++) {
      for (let i = 1; i < images.length; i++) {
        await pull(mirror.url, `origin/ci/img${i}`, images[i]!);
        await waitUntil(() => mirror.mirror.cache.size <= maxSize, {
          what: `the store to get back under ${maxSize} bytes`,
        });
      }
    }
    // Clients have every byte a moment before the blob is in the store: let the last ones
    // settle, and the eviction they start finish.
    await mirror.mirror.settled();
    await waitUntil(() => mirror.mirror.cache.size <= maxSize, { what: 'the last eviction' });
    await mirror.mirror.cache.idle();
    assert.ok(mirror.mirror.index.totalSize() <= maxSize);
    assert.equal(await bytesOnDisk(data), mirror.mirror.index.totalSize());
    for (const d of pinnedDigests) assert.ok(mirror.mirror.index.getBlob(d), `pinned ${d} evicted`);
    assert.ok((await metric(mirror.url, 'wharf_evictions_total')) > 10);
    assert.ok((await metric(mirror.url, 'wharf_pinned_bytes')) >= pinned.totalSize - 1000);

    // Evicted images lose their manifests and tags too, once the grace after their last use
    // has passed (none here); nothing dangles.
    await evict(mirror.mirror.index, mirror.mirror.store, { bytes: 0, orphanGraceMs: 0 });
    const evicted = images.slice(1).filter((img) => !mirror.mirror.index.getBlob(img.layers[0]!.digest));
    assert.ok(evicted.length > 0);
    for (const img of evicted) assert.equal(mirror.mirror.index.getBlob(img.digest), undefined);

    // And a pinned image is still a hit.
    const hits = await metric(mirror.url, 'wharf_requests_total', { kind: 'blob', outcome: 'hit' });
    await pull(mirror.url, 'origin/ci/img0', pinned);
    assert.equal(
      await metric(mirror.url, 'wharf_requests_total', { kind: 'blob', outcome: 'hit' }),
      hits + 3,
    );
  });

  test('a multi-platform image goes platform by platform, then with its index and tag', async () => {
    const multi = await buildIndex(join(await makeTempDir('multi'), 'multi'), [
      { layers: [120_000], architecture: 'amd64' },
      { layers: [110_000], architecture: 'arm64' },
    ], { tag: 'v1' });
    await pushLayout(registry.url, 'ci/multi', 'v1', multi.dir);
    const mirror = await startTestMirror({ upstreams: [`origin=${registry.url}`] });
    const base = `${mirror.url}/v2/origin/ci/multi`;
    const accept = { accept: multi.mediaType };
    assert.equal(sha256((await get(`${base}/manifests/v1`, { headers: accept })).body), multi.digest);
    for (const image of multi.images) {
      const headers = { accept: image.mediaType };
      const m = await get(`${base}/manifests/${image.digest}`, { headers });
      assert.equal(sha256(m.body), image.digest);
      for (const b of [image.config, ...image.layers]) await download(`${base}/blobs/${b.digest}`);
    }
    const index = mirror.mirror.index;
    const [amd64, arm64] = multi.images as [BuiltImage, BuiltImage];
    const contentOf = (image: BuiltImage) => [image.config, ...image.layers];

    // The amd64 content is the least recently used: it goes first, and its manifest with it.
    const amd64Blobs = contentOf(amd64);
    const age = index.db.prepare('UPDATE blobs SET last_access = 1 WHERE digest = ?');
    for (const b of amd64Blobs) age.run(b.digest);
    const bytes = amd64Blobs.reduce((sum, b) => sum + b.size, 0);
    await evict(index, mirror.mirror.store, { bytes, orphanGraceMs: 0 });
    assert.equal(index.getBlob(amd64.digest), undefined);
    assert.ok(index.getBlob(arm64.digest), 'the arm64 manifest still has its content');
    assert.ok(index.getBlob(multi.digest), 'the index still has a platform with content');

    await evict(index, mirror.mirror.store, { bytes: Number.MAX_SAFE_INTEGER, orphanGraceMs: 0 });
    for (const d of [multi.digest, arm64.digest]) assert.equal(index.getBlob(d), undefined, d);
    assert.deepEqual(index.tagsOf('origin', 'ci/multi'), []);
    assert.equal(index.totalSize(), 0);
    assert.equal(await bytesOnDisk(mirror.mirror.store.root), 0);
  });

  test('a pinned tag that moves is fetched again before anyone asks', async () => {
    const data = join(await makeTempDir('pin-move'), 'data');
    const mirror = await startTestMirror({
      upstreams: [`origin=${registry.url}`],
      data,
      tagTtlMs: 200,
      tweak: (c) => (c.cache.pins = [{ image: 'origin/ci/moving:v1' }]),
    });
    const first = images[1]!;
    await pushLayout(registry.url, 'ci/moving', 'v1', first.dir, { layoutTag: 'v1' });
    await waitUntil(() => mirror.mirror.index.getBlob(first.layers[0]!.digest), {
      what: 'the first version to be fetched',
    });
    const next = await buildImage(join(await makeTempDir('next'), 'next'), { layers: [100_000], tag: 'v1' });
    await pushLayout(registry.url, 'ci/moving', 'v1', next.dir);
    await waitUntil(() => mirror.mirror.index.getBlob(next.layers[0]!.digest), {
      what: 'the moved tag to be fetched',
    });
    await waitUntil(() => !mirror.mirror.index.pinnedDigests().has(first.layers[0]!.digest), {
      what: 'the old version to be released',
    });
  });
});

/** A tmpfs of its own, unmounted by cleanupAll: a disk that really fills up. */
async function mountTmpfs(prefix: string, options: string): Promise<string> {
  const dir = await makeTempDir(prefix);
  await run('mount', ['-t', 'tmpfs', '-o', options, 'tmpfs', dir]);
  registerCleanup(() => run('umount', ['-l', dir]).catch(() => undefined));
  return dir;
}

/** A mirror of `originUrl` with its data on a tmpfs of its own and no free-disk floor. */
async function mirrorOnTmpfs(prefix: string, options: string, originUrl: string) {
  const mount = await mountTmpfs(prefix, options);
  const data = join(mount, 'data');
  await mkdir(data);
  const mirror = await startTestMirror({
    upstreams: [`origin=${originUrl}`],
    data,
    tweak: (c) => (c.cache.minFreeDiskBytes = 0),
  });
  return { mount, data, mirror };
}

/** Writes into `file` until the filesystem refuses (ENOSPC); returns the bytes it took. */
async function fillDisk(file: string): Promise<number> {
  const fd = await open(file, 'w');
  const chunk = Buffer.alloc(64 * 1024, 1);
  let total = 0;
  try {
    for (;;) total += (await fd.write(chunk)).bytesWritten;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
    return total;
  } finally {
    await fd.close();
  }
}

/** Takes every free inode of the filesystem at `dir` but `spare`, with empty files. */
async function fillInodes(dir: string, spare: number): Promise<void> {
  await mkdir(dir);
  let n = 0;
  try {
    for (;;) await writeFile(join(dir, String(n++)), '');
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err;
  }
  for (let i = 0; i < spare; i++) await rm(join(dir, String(i)));
}

describe('a full disk never fails a pull', () => {
  let origin: FaultyOrigin;
  let big: BuiltImage;
  let mountPoint: string;

  before(async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    big = await buildImage(join(await makeTempDir('big'), 'big'), { layers: [6_000_000, 3_000_000], tag: 'v1' });
    await pushLayout(registry.url, 'ci/big', 'v1', big.dir);
    origin = await startFaultyOrigin(registry.url);
    mountPoint = await makeTempDir('tmpfs');
    // A small filesystem of its own: ENOSPC comes mid-write, as on a real full disk.
    await run('mount', ['-t', 'tmpfs', '-o', 'size=4m', 'tmpfs', mountPoint]);
    registerCleanup(() => run('umount', ['-l', mountPoint]).catch(() => undefined));
  });
  after(cleanupAll);

  test('ENOSPC in the middle of a blob: clients get every byte, no partial blob is left', async () => {
    const data = join(mountPoint, 'data');
    await mkdir(data, { recursive: true });
    const mirror = await startTestMirror({
      upstreams: [`origin=${origin.url}`],
      data,
      // No floor, so the write really runs into ENOSPC.
      tweak: (c) => (c.cache.minFreeDiskBytes = 0),
    });
    const layer = big.layers[0]!;
    // Slow enough that several clients share the fetch when the disk fills up.
    origin.slowBlob(layer.digest, 8_000_000);
    const url = `${mirror.url}/v2/origin/ci/big/blobs/${layer.digest}`;
    const bodies = await Promise.all([download(url), download(url), download(url)]);
    for (const body of bodies) assert.equal(sha256(body), layer.digest);
    assert.ok((await metric(mirror.url, 'wharf_pass_through_fetches_total')) >= 1);
    await expectUnstored(mirror, data, layer.digest);
    assert.equal(await bytesOnDisk(data), mirror.mirror.index.totalSize());
    await mirror.close();
  });

  test('a disk that fills up while a blob it had room for is written still serves it', async () => {
    const { mount, data, mirror } = await mirrorOnTmpfs('tmpfs-fill', 'size=8m', origin.url);
    const layer = big.layers[1]!;
    const { bavail, bsize } = await statfs(mount);
    assert.ok(bavail * bsize > 2 * layer.size, 'the free-disk check lets the blob be stored');
    origin.slowBlob(layer.digest, 2_000_000);
    const url = `${mirror.url}/v2/origin/ci/big/blobs/${layer.digest}`;
    const bodies = Promise.all([download(url), download(url)]);

    // The fetch is storing; then someone else takes the rest of the disk.
    await waitUntil(async () => {
      const names = await readdir(join(data, 'tmp'));
      return names.length === 1 && (await stat(join(data, 'tmp', names[0]!))).size > 500_000;
    }, { what: 'the blob to be part-written to its temp file' });
    assert.ok((await fillDisk(join(mount, 'filler'))) > 0);

    for (const body of await bodies) assert.equal(sha256(body), layer.digest);
    assert.equal(await metric(mirror.url, 'wharf_pass_through_fetches_total'), 1);
    await expectUnstored(mirror, data, layer.digest);
    assert.equal(await bytesOnDisk(data), 0);
    origin.clearFaults();
    await mirror.close();
  });

  test('a disk that fails at the commit of a verified blob still serves every byte', async () => {
    const { mount, data, mirror } = await mirrorOnTmpfs('tmpfs-inodes', 'size=16m,nr_inodes=64', origin.url);
    // One inode left: the temp file gets it, the blob's prefix folder at the commit cannot.
    await fillInodes(join(mount, 'filler'), 1);
    const layer = big.layers[1]!;
    origin.slowBlob(layer.digest, 6_000_000);
    const url = `${mirror.url}/v2/origin/ci/big/blobs/${layer.digest}`;

    const bodies = await Promise.all([download(url), download(url)]);
    for (const body of bodies) assert.equal(sha256(body), layer.digest);
    // Clients have the last byte before the commit is tried.
    await expectUnstored(mirror, data, layer.digest);
    assert.equal(await metric(mirror.url, 'wharf_pass_through_fetches_total'), 1);
    assert.equal(await metric(mirror.url, 'wharf_fetch_failures_total'), 0);
    assert.equal(await bytesOnDisk(data), 0);
    origin.clearFaults();
    await mirror.close();
  });

  test('below the free-disk floor new blobs pass through unstored and the pull works', async () => {
    const data = join(mountPoint, 'floor');
    await mkdir(data, { recursive: true });
    const mirror = await startTestMirror({
      upstreams: [`origin=${origin.url}`],
      data,
      tweak: (c) => (c.cache.minFreeDiskBytes = 3_500_000),
    });
    origin.clearFaults();
    await pull(mirror.url, 'origin/ci/big', big);
    await mirror.mirror.settled();
    assert.equal(mirror.mirror.index.getBlob(big.layers[0]!.digest), undefined);
    assert.ok((await metric(mirror.url, 'wharf_pass_through_fetches_total')) >= 1);
    await mirror.close();
  });
});

/** Overwrites the header of the root page of a table or index, in a closed database file. */
async function smashPage(file: string, name: string): Promise<void> {
  const db = new IndexDb(file);
  const { rootpage } = db.db
    .prepare<[string], { rootpage: number }>('SELECT rootpage FROM sqlite_master WHERE name = ?')
    .get(name)!;
  const pageSize = db.db.pragma('page_size', { simple: true }) as number;
  db.close();
  const fd = await open(file, 'r+');
  await fd.write(Buffer.alloc(16, 0xff), 0, 16, (rootpage - 1) * pageSize);
  await fd.close();
}

describe('crash safety and recovery', () => {
  let registry: Registry;
  let origin: FaultyOrigin;
  let image: BuiltImage;

  before(async () => {
    registry = await startRegistry({ logLevel: 'error' });
    image = await buildImage(join(await makeTempDir('img'), 'app'), {
      layers: [3_000_000, 2_000_000, 1_000_000],
      tag: 'v1',
    });
    await pushLayout(registry.url, 'ci/app', 'v1', image.dir);
    origin = await startFaultyOrigin(registry.url);
  });
  after(cleanupAll);

  test('kill -9 during concurrent cold pulls, then a restart serves nothing partial', async () => {
    const dir = await makeTempDir('crash');
    const data = join(dir, 'data');
    const args = ['--data', data, '--upstream', `origin=${origin.url}`, '--log-level', 'warn'];
    // The smallest layer arrives whole and is committed; the others are cut by the kill.
    const [big, medium, small] = image.layers as [LayerInfo, LayerInfo, LayerInfo];
    for (const layer of [big, medium]) origin.slowBlob(layer.digest, 2_000_000);
    const first = await startMirrorProcess(dir, args);
    const base = `${first.url}/v2/origin/ci/app`;
    const pulls = [...image.layers, ...image.layers].map((l) =>
      request(`${base}/blobs/${l.digest}`).then((r) => r.body.arrayBuffer()).catch(() => undefined),
    );
    const committed = new BlobStore(data).path(small.digest);
    await waitUntil(async () => (await stat(committed).catch(() => undefined)) !== undefined
      && origin.blobBytesSent(big.digest) > 500_000, {
      what: 'one blob committed while the others are under way',
    });
    assert.ok(origin.blobBytesSent(medium.digest) < medium.size, 'a fetch is cut by the kill');
    process.kill(first.process.pid, 'SIGKILL');
    await first.process.exited;
    await Promise.all(pulls);

    origin.clearFaults();
    const second = await startMirrorProcess(dir, args);
    assert.deepEqual(await readdir(join(data, 'tmp')), []);
    const store = new BlobStore(data);
    const kept: string[] = [];
    for await (const digest of store.list()) {
      assert.ok(await verifyFile(store.path(digest), digest), `${digest} is not what it claims`);
      kept.push(digest);
    }
    assert.ok(kept.includes(small.digest), 'the blob committed before the kill is kept');
    assert.ok(!kept.includes(big.digest), 'a blob cut by the kill is not in the store');
    const out = await makeTempDir('copy');
    await skopeoCopy(`docker://${new URL(second.url).host}/origin/ci/app:v1`, `oci:${out}:v1`);
    for (const layer of image.layers) {
      const copied = await import('node:fs/promises').then((fs) =>
        fs.readFile(join(out, 'blobs', 'sha256', layer.digest.slice(7))),
      );
      assert.equal(sha256(copied), layer.digest);
    }
    await second.process.stop();
  });

  test('a removed or corrupt index is rebuilt from the blob folder', async () => {
    const dir = await makeTempDir('reindex');
    const data = join(dir, 'data');
    let mirror: RunningMirror = await startTestMirror({ upstreams: [`origin=${origin.url}`], data });
    await pull(mirror.url, 'origin/ci/app', image);
    await mirror.mirror.settled();
    const stored = mirror.mirror.index.totalSize();
    await mirror.close();

    for (const damage of ['damaged page', 'remove', 'corrupt'] as const) {
      if (damage === 'damaged page') {
        // A file SQLite still opens, with one b-tree page smashed: only quick_check tells.
        await smashPage(join(data, 'index.db'), 'blobs_lru');
      } else {
        for (const f of ['index.db', 'index.db-wal', 'index.db-shm']) await rm(join(data, f), { force: true });
      }
      if (damage === 'corrupt') await writeFile(join(data, 'index.db'), 'this is not a database '.repeat(100));
      mirror = await startTestMirror({ upstreams: [`origin=${origin.url}`], data });
      assert.equal(mirror.mirror.index.totalSize(), stored, damage);
      assert.deepEqual(mirror.mirror.index.quickCheck(), [], damage);
      // The manifest came back with what it refers to: it is no orphan for eviction to drop.
      assert.deepEqual(mirror.mirror.index.orphanManifests(Date.now()), [], damage);
      if (damage !== 'remove') {
        assert.ok((await readdir(data)).some((f) => f.startsWith('index.db.corrupt-')), damage);
      }
      // The blobs come back from the store: the origin is asked which repository has them
      // (HEAD) but sends no blob again.
      origin.resetCounters();
      await pull(mirror.url, 'origin/ci/app', image);
      assert.equal(origin.count('GET', /\/blobs\//), 0, damage);
      const manifest = await get(`${mirror.url}/v2/origin/ci/app/manifests/${image.digest}`);
      assert.equal(manifest.headers['content-type'], image.mediaType);
      await mirror.close();
    }
  });

  test('an index that cannot be opened but is not corrupt is left as it is, with a hint', async () => {
    const data = join(await makeTempDir('cantopen'), 'data');
    // A folder where the file should be: SQLite cannot open it, and nothing is corrupt.
    await mkdir(join(data, 'index.db'), { recursive: true });
    await assert.rejects(
      startTestMirror({ upstreams: [`origin=${origin.url}`], data }),
      (err: WharfError) => {
        assert.equal(err.code, 'WHARF_STATE_UNWRITABLE');
        assert.match(err.hint ?? '', /readable and writable/);
        return true;
      },
    );
    assert.deepEqual(await readdir(data), ['index.db']);
    assert.ok((await stat(join(data, 'index.db'))).isDirectory());
  });
});

describe('eviction and fetches running at the same time', () => {
  after(cleanupAll);

  /** An index and store of their own, with `n` layer blobs used in order 1, 2, ... n. */
  async function storeWith(n: number) {
    const dir = await makeTempDir('evict');
    const index = new IndexDb(join(dir, 'index.db'));
    registerCleanup(() => index.close());
    const store = new BlobStore(dir);
    const blobs: string[] = [];
    for (let i = 0; i < n; i++) {
      const body = Buffer.from(`blob ${i}`);
      const digest = sha256(body);
      await mkdir(join(store.path(digest), '..'), { recursive: true });
      await writeFile(store.path(digest), body);
      index.putBlob(digest, body.length, null, i + 1);
      blobs.push(digest);
    }
    return { index, store, blobs };
  }

  /** Runs `hook` once, at the first unlink eviction makes. */
  function onFirstUnlink(store: BlobStore, hook: () => void): void {
    const remove = store.remove.bind(store);
    let done = false;
    store.remove = async (digest) => {
      if (!done) {
        done = true;
        hook();
      }
      return remove(digest);
    };
  }

  const exists = (path: string) => stat(path).then(() => true, () => false);

  test('a manifest stored a moment ago keeps its row and tag while its content is fetched', async () => {
    const { index, store } = await storeWith(0);
    const layer = sha256(Buffer.from('layer not fetched yet'));
    const manifest = sha256(Buffer.from('manifest'));
    index.putManifest(manifest, 8, 'application/vnd.oci.image.manifest.v1+json', 'o', 'r', [layer]);
    index.putTag('o', 'r', 'v1', manifest);

    await evict(index, store, { bytes: Number.MAX_SAFE_INTEGER });
    assert.ok(index.getBlob(manifest), 'the manifest of a pull in progress was evicted');
    assert.equal(index.getTag('o', 'r', 'v1')?.digest, manifest);

    index.db.prepare('UPDATE blobs SET last_access = ?').run(Date.now() - 11 * 60_000);
    await evict(index, store, { bytes: 0 });
    assert.equal(index.getBlob(manifest), undefined);
    assert.equal(index.getTag('o', 'r', 'v1'), undefined);
  });

  test('an index is kept while one of its platform manifests is in use, then goes with it', async () => {
    const { index, store } = await storeWith(0);
    const [layer, platform, top] = ['layer', 'platform', 'index'].map((s) => sha256(Buffer.from(s)));
    const type = 'application/vnd.oci.image.manifest.v1+json';
    index.putManifest(platform!, 8, type, 'o', 'r', [layer!]);
    index.putManifest(top!, 8, 'application/vnd.oci.image.index.v1+json', 'o', 'r', [platform!]);
    index.putTag('o', 'r', 'v1', top!);
    index.db.prepare('UPDATE blobs SET last_access = 1 WHERE digest = ?').run(top);

    await evict(index, store, { bytes: 0, orphanGraceMs: 60_000 });
    assert.ok(index.getBlob(top!), 'the index went while its platform manifest was in use');
    assert.ok(index.getBlob(platform!));

    await evict(index, store, { bytes: 0, orphanGraceMs: 0 });
    for (const d of [top!, platform!]) assert.equal(index.getBlob(d), undefined, d);
    assert.deepEqual(index.tagsOf('o', 'r'), []);
  });

  test('a blob fetched again while eviction unlinks its old file keeps the new file', async () => {
    const { index, store, blobs } = await storeWith(6);
    const refetched = blobs[5]!;
    const fetching = blobs[4]!;
    // The first unlinks are awaited while a fetch commits one digest (new file, new row) and
    // another fetch of a second digest is still writing.
    onFirstUnlink(store, () => index.putBlob(refetched, 6, null));

    // All six and no more: the new row is not evicted in its turn.
    await evict(index, store, {
      bytes: 6 * 6,
      isBusy: (d) => d === fetching && index.getBlob(d) === undefined,
    });
    assert.ok(index.getBlob(refetched));
    assert.ok(await exists(store.path(refetched)), 'the new row was left without its file');
    assert.ok(await exists(store.path(fetching)), 'the file of a fetch in progress was unlinked');
    assert.equal(await exists(store.path(blobs[0]!)), false);
  });

  test('a blob pinned while an eviction pass runs is not evicted', async () => {
    const { index, store, blobs } = await storeWith(6);
    const late = blobs[5]!;
    onFirstUnlink(store, () => index.setPinnedBlobs('o/r:v1', [late]));

    await evict(index, store, { bytes: Number.MAX_SAFE_INTEGER, batchSize: 2 });
    assert.ok(index.getBlob(late), 'a blob pinned mid-pass was evicted');
    assert.ok(await exists(store.path(late)));
    assert.equal(index.getBlob(blobs[4]!), undefined);
  });

  test('uses that cannot be written while another process holds the lock are kept, not fatal', async () => {
    const { index, blobs } = await storeWith(1);
    const digest = blobs[0]!;
    index.db.pragma('busy_timeout = 0');
    const other = new Database(index.db.name);
    registerCleanup(() => other.close());
    other.exec('BEGIN IMMEDIATE');
    const errors: Error[] = [];
    index.onTouchFlushError = (err) => errors.push(err);

    // From the timer, as in the mirror: a throw there would end this process.
    index.touch(digest, 4242);
    await waitUntil(() => errors.length > 0, { what: 'the failed write to be reported' });
    assert.match(errors[0]!.message, /locked|busy/i);
    assert.equal(index.getBlob(digest)?.last_access, 1);

    other.exec('COMMIT');
    index.flushTouches();
    assert.equal(index.getBlob(digest)?.last_access, 4242);
  });
});
