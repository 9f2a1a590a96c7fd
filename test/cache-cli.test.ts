import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createHash } from 'node:crypto';
import { mkdir, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { Writable } from 'node:stream';
import { fileURLToPath } from 'node:url';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { buildImage, type BuiltImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry } from './helpers/registry.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';
import { get, metric, startTestMirror } from './support/mirror.js';
import { verifyAll } from '../src/cli/cache.js';
import { silentLogger } from '../src/log.js';
import { sendFile } from '../src/mirror/send-file.js';
import type { RunningMirror } from '../src/mirror/server.js';
import { BlobStore } from '../src/store/blob-store.js';
import { evict } from '../src/store/eviction.js';
import { openIndex } from '../src/store/recovery.js';

const execFileP = promisify(execFile);
const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
const sha256 = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;

/** Runs `wharf ARGS` and returns its exit code and output, failing or not. */
async function wharf(args: string[]): Promise<{ code: number; stdout: string; stderr: string }> {
  try {
    const { stdout, stderr } = await execFileP(process.execPath, ['--import', 'tsx', MAIN, ...args]);
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number; stdout: string; stderr: string };
    return { code: e.code, stdout: e.stdout, stderr: e.stderr };
  }
}

describe('wharf cache commands on a running mirror', () => {
  let mirror: RunningMirror;
  let data: string;
  const images: BuiltImage[] = [];

  before(async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    const dir = await makeTempDir('imgs');
    for (const name of ['alpha', 'beta']) {
      const image = await buildImage(join(dir, name), { layers: [200_000, 100_000], tag: 'v1' });
      await pushLayout(registry.url, `team/${name}`, 'v1', image.dir);
      images.push(image);
    }
    data = join(await makeTempDir('data'), 'store');
    mirror = await startTestMirror({
      upstreams: [`origin=${registry.url}`],
      data,
      // No disk check of its own during the tests: they decide when the mirror looks again.
      tweak: (c) => (c.cache.diskCheckIntervalMs = 3_600_000),
    });
    for (const [i, name] of ['alpha', 'beta'].entries()) {
      const base = `${mirror.url}/v2/origin/team/${name}`;
      await get(`${base}/manifests/v1`);
      for (const b of [images[i]!.config, ...images[i]!.layers]) await get(`${base}/blobs/${b.digest}`);
    }
  });
  after(cleanupAll);

  test('ls lists every cached tag with its digest and size', async () => {
    const { code, stdout } = await wharf(['cache', 'ls', '--data', data, '--json']);
    assert.equal(code, 0);
    const tags = JSON.parse(stdout) as { image: string; digest: string; size: number }[];
    assert.deepEqual(tags.map((t) => t.image), ['origin/team/alpha:v1', 'origin/team/beta:v1']);
    assert.equal(tags[0]!.digest, images[0]!.digest);
    assert.equal(tags[0]!.size, images[0]!.totalSize);
    const human = await wharf(['cache', 'ls', '--data', data]);
    assert.match(human.stdout, /origin\/team\/alpha:v1\s+sha256:/);
  });

  test('du adds up the store by repository', async () => {
    const { stdout } = await wharf(['cache', 'du', '--data', data, '--json']);
    const du = JSON.parse(stdout) as {
      totalBytes: number;
      blobs: number;
      manifests: number;
      byRepository: { repository: string; blobs: number; manifests: number }[];
    };
    assert.equal(du.totalBytes, images[0]!.totalSize + images[1]!.totalSize);
    assert.deepEqual(du.byRepository.map((r) => r.repository).sort(), ['origin/team/alpha', 'origin/team/beta']);
    // Config and two layers per image, and its manifest, counted apart as in the totals.
    assert.deepEqual(du.byRepository.map((r) => [r.blobs, r.manifests]), [[3, 1], [3, 1]]);
    assert.deepEqual([du.blobs, du.manifests], [6, 2]);
  });

  test('pin and unpin record the image for the mirror, which fetches and holds it', async () => {
    assert.equal((await wharf(['cache', 'pin', 'origin/team/beta:v1', '--data', data])).code, 0);
    await mirror.pinner.refresh();
    assert.ok(mirror.mirror.index.pinnedDigests().has(images[1]!.layers[0]!.digest));
    const unpinned = await wharf(['cache', 'unpin', 'origin/team/beta:v1', '--data', data]);
    assert.equal(unpinned.code, 0);
    assert.equal(mirror.mirror.index.pinnedDigests().size, 0);
    const again = await wharf(['cache', 'unpin', 'origin/team/beta:v1', '--data', data]);
    assert.equal(again.code, 2);
    assert.match(again.stderr, /not pinned/);
  });

  test('pins lists every pin, fetched yet or not, with its platforms and what it holds', async () => {
    const pin = (image: string, ...more: string[]) => wharf(['cache', 'pin', image, '--data', data, ...more]);
    assert.equal((await pin('origin/team/alpha:v1', '--platform', 'linux/x86_64')).code, 0);
    assert.equal((await pin('origin/team/nothing-yet:v9')).code, 0);
    await mirror.pinner.refresh();

    const { code, stdout } = await wharf(['cache', 'pins', '--data', data, '--json']);
    assert.equal(code, 0);
    const pins = JSON.parse(stdout) as { image: string; platforms: string[] | null; blobs: number; bytes: number }[];
    assert.deepEqual(pins.map((p) => [p.image, p.platforms]), [
      ['origin/team/alpha:v1', ['linux/amd64']],
      ['origin/team/nothing-yet:v9', null],
    ]);
    assert.equal(pins[0]!.bytes, images[0]!.totalSize);
    assert.equal(pins[1]!.blobs, 0);
    const human = await wharf(['cache', 'pins', '--data', data]);
    assert.match(human.stdout, /origin\/team\/nothing-yet:v9\s+all\s+cli\s+nothing yet/);

    for (const image of ['origin/team/alpha:v1', 'origin/team/nothing-yet:v9']) {
      assert.equal((await wharf(['cache', 'unpin', image, '--data', data])).code, 0);
    }
  });

  test('pin refuses a platform that is not os/arch[/variant], and keeps the pin as it was', async () => {
    for (const bad of ['windows', 'foo/bar/baz/qux', 'windows(10.0.20348)/amd64']) {
      const refused = await wharf(['cache', 'pin', 'origin/team/beta:v1', '--platform', bad, '--data', data]);
      assert.equal(refused.code, 2, bad);
      assert.match(refused.stderr, /--platform/, bad);
    }
    assert.deepEqual(mirror.mirror.index.listPins(), []);
  });

  test('pin refuses an image no upstream of the mirror serves, and names the upstreams', async () => {
    const refused = await wharf(['cache', 'pin', 'elsewhere.example/team/beta:v1', '--data', data]);
    assert.notEqual(refused.code, 0);
    assert.match(refused.stderr, /elsewhere\.example .*not an upstream/);
    assert.match(refused.stderr, /origin \(http:\/\/127\.0\.0\.1:\d+\)/);
    assert.deepEqual(mirror.mirror.index.listPins(), []);

    // By the upstream's host and port, as well as by its NAME.
    const host = new URL(mirror.mirror.config.upstreams[0]!.url).host;
    const pinned = await wharf(['cache', 'pin', `${host}/team/beta:v1`, '--data', data]);
    assert.equal(pinned.code, 0, pinned.stderr);
    assert.doesNotMatch(pinned.stdout, /not checked/);
    assert.equal((await wharf(['cache', 'unpin', `${host}/team/beta:v1`, '--data', data])).code, 0);
  });

  test('pin on a folder no mirror has started on yet records the image and says it was not checked', async () => {
    const fresh = await makeTempDir('fresh');
    const index = await openIndex(fresh, silentLogger());
    index.close();
    for (const image of ['elsewhere.example/team/beta:v1', '127.0.0.1_5001/team/beta:v1', 'corp/team/beta']) {
      const pinned = await wharf(['cache', 'pin', image, '--data', fresh]);
      assert.equal(pinned.code, 0, pinned.stderr);
      assert.match(pinned.stdout, /not checked against upstreams/);
    }
    const bad = await wharf(['cache', 'pin', 'corp/Team/beta', '--data', fresh]);
    assert.notEqual(bad.code, 0);
    assert.match(bad.stderr, /invalid image reference "corp\/Team\/beta"/);
    // Against the upstreams, a NAME with a bad repository is named as the user wrote it.
    const named = await wharf(['cache', 'pin', 'origin/Team/beta', '--data', data]);
    assert.notEqual(named.code, 0);
    assert.match(named.stderr, /invalid image reference "origin\/Team\/beta": bad repository/);
  });

  test('verify finds a corrupted blob, quarantines it and says which; the mirror refetches it', async () => {
    const layer = images[0]!.layers[1]!;
    const path = mirror.mirror.store.path(layer.digest);
    await writeFile(path, Buffer.alloc(layer.size, 7));
    const { code, stdout } = await wharf(['cache', 'verify', '--data', data]);
    assert.equal(code, 1);
    assert.match(stdout, new RegExp(`corrupt: ${layer.digest}`));
    assert.equal((await readdir(join(data, 'quarantine'))).length, 1);
    const res = await get(`${mirror.url}/v2/origin/team/alpha/blobs/${layer.digest}`);
    assert.equal(sha256(res.body), layer.digest);
    assert.equal((await wharf(['cache', 'verify', '--data', data])).code, 0);
  });

  test('a stored blob the mirror has begun to answer with keeps its bytes when gc unlinks it', async () => {
    await mirror.mirror.settled();
    const layer = images[1]!.layers[0]!;
    const upstream = mirror.mirror.config.upstreams.find((u) => u.name === 'origin')!;
    const source = await mirror.mirror.blob(upstream, 'team/beta', layer.digest);
    assert.equal(source.kind, 'store');
    if (source.kind !== 'store') return;

    // `wharf cache gc` cannot see the mirror's holds: it unlinks between the headers and the body.
    await rm(mirror.mirror.store.path(layer.digest));
    const chunks: Buffer[] = [];
    const sink = new Writable({
      write(chunk: Buffer, _encoding, done) {
        chunks.push(Buffer.from(chunk));
        done();
      },
    });
    const sent = await sendFile(sink, source.file, 0, source.size, layer.digest);
    source.release();
    assert.equal(sent, layer.size);
    assert.equal(sha256(Buffer.concat(chunks)), layer.digest);

    // The next request finds the file gone, forgets the row and fetches the blob again.
    const res = await get(`${mirror.url}/v2/origin/team/beta/blobs/${layer.digest}`);
    assert.equal(sha256(res.body), layer.digest);
    await mirror.mirror.settled();
  });

  test('gc evicts down to the budget it is given', async () => {
    const budget = images[1]!.totalSize + 1000;
    const { code, stdout } = await wharf(['cache', 'gc', '--data', data, '--max-size', String(budget)]);
    assert.equal(code, 0, stdout);
    assert.match(stdout, /evicted \d+ blobs?,/);
    assert.ok(mirror.mirror.index.totalSize() <= budget);
  });

  test('gc says why the store stays over a budget that pins exceed', async () => {
    assert.equal((await wharf(['cache', 'pin', 'origin/team/beta:v1', '--data', data])).code, 0);
    await mirror.pinner.refresh();
    const { code, stdout } = await wharf(['cache', 'gc', '--data', data, '--max-size', '1KB']);
    assert.equal(code, 0, stdout);
    assert.match(stdout, /over the budget: .* pinned \(see `wharf cache pins`\)/);
    assert.equal((await wharf(['cache', 'unpin', 'origin/team/beta:v1', '--data', data])).code, 0);
  });

  test("the mirror's byte count follows what gc removed from another process", async () => {
    assert.ok(mirror.mirror.cache.size > mirror.mirror.index.totalSize());
    await mirror.mirror.cache.gc();
    assert.equal(mirror.mirror.cache.size, mirror.mirror.index.totalSize());
    assert.equal(await metric(mirror.url, 'wharf_store_bytes'), mirror.mirror.index.totalSize());
  });

  test('verify passes over blobs the mirror evicts while it runs, corrupt ones included', async () => {
    const alpha = images[0]!;
    const base = `${mirror.url}/v2/origin/team/alpha`;
    for (const b of [alpha.config, ...alpha.layers]) await get(`${base}/blobs/${b.digest}`);
    await mirror.mirror.settled();
    const bad = alpha.layers[0]!;
    await writeFile(mirror.mirror.store.path(bad.digest), Buffer.alloc(bad.size, 7));

    // verify's snapshot of the rows, then the mirror evicts all but the corrupt layer...
    const cli = await openIndex(data, silentLogger(), { rebuild: false });
    const snapshot = cli.allBlobs();
    assert.ok(snapshot.length > 1);
    await evict(mirror.mirror.index, mirror.mirror.store, {
      bytes: Number.MAX_SAFE_INTEGER,
      isBusy: (d) => d === bad.digest,
    });
    cli.allBlobs = () => snapshot;
    // ...and that one too, just after verify found it corrupt: rows first, then the file.
    const deleteBlob = cli.deleteBlob.bind(cli);
    cli.deleteBlob = (digest) => {
      deleteBlob(digest);
      rmSync(mirror.mirror.store.path(digest), { force: true });
    };

    const report = await verifyAll(cli, new BlobStore(data));
    cli.close();
    assert.deepEqual(report.missing, []);
    assert.deepEqual(report.corrupt, []);
    assert.equal(mirror.mirror.index.getBlob(bad.digest), undefined);
  });

  test('commands report a corrupt index and leave it for `wharf serve` to rebuild', async () => {
    const broken = join(await makeTempDir('broken'), 'data');
    await mkdir(join(broken, 'blobs'), { recursive: true });
    const garbage = 'this is not a database '.repeat(100);
    await writeFile(join(broken, 'index.db'), garbage);
    for (const cmd of [['ls'], ['verify'], ['gc', '--max-size', '1GB']]) {
      const { code, stderr } = await wharf(['cache', ...cmd, '--data', broken]);
      assert.equal(code, 1, cmd[0]);
      assert.match(stderr, /WHARF_STORE_CORRUPT/, cmd[0]);
      assert.match(stderr, /hint: restart `wharf serve`/, cmd[0]);
    }
    assert.deepEqual((await readdir(broken)).sort(), ['blobs', 'index.db']);
    assert.equal(await readFile(join(broken, 'index.db'), 'utf8'), garbage);
  });

  test('commands refuse a folder that is not a data folder, with a hint', async () => {
    const empty = await makeTempDir('empty');
    const { code, stderr } = await wharf(['cache', 'ls', '--data', empty]);
    assert.equal(code, 2);
    assert.match(stderr, /WHARF_BAD_USAGE/);
    assert.match(stderr, /hint:/);
  });
});

describe('wharf cache ls and images pulled by digest', () => {
  after(cleanupAll);

  test('an image pulled by digest alone is listed as repository@digest', async () => {
    const registry = await startRegistry({ logLevel: 'error' });
    const dir = await makeTempDir('by-digest');
    const tagged = await buildImage(join(dir, 'tagged'), { layers: [50_000], tag: 'v1' });
    const byDigest = await buildImage(join(dir, 'byDigest'), { layers: [60_000], tag: 'v2' });
    await pushLayout(registry.url, 'team/tagged', 'v1', tagged.dir);
    await pushLayout(registry.url, 'team/bydigest', 'v2', byDigest.dir);
    const data = join(dir, 'data');
    const mirror = await startTestMirror({ upstreams: [`origin=${registry.url}`], data });
    await get(`${mirror.url}/v2/origin/team/tagged/manifests/v1`);
    const base = `${mirror.url}/v2/origin/team/bydigest`;
    assert.equal((await get(`${base}/manifests/${byDigest.digest}`)).status, 200);
    for (const b of [byDigest.config, ...byDigest.layers]) await get(`${base}/blobs/${b.digest}`);
    await mirror.mirror.settled();

    const { code, stdout } = await wharf(['cache', 'ls', '--data', data, '--json']);

    assert.equal(code, 0);
    const entries = JSON.parse(stdout) as { image: string; size: number; confirmedAt: unknown }[];
    assert.deepEqual(entries.map((e) => e.image), [
      'origin/team/tagged:v1',
      `origin/team/bydigest@${byDigest.digest}`,
    ]);
    assert.equal(entries[1]!.size, byDigest.totalSize);
    assert.equal(entries[1]!.confirmedAt, null);
  });
});
