import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { startDockerd, type Dockerd } from './helpers/dockerd.js';
import { buildImage, type BuiltImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';
import { metric, startTestMirror } from './support/mirror.js';
import type { RunningMirror } from '../src/mirror/server.js';

const run = promisify(execFile);

async function repoDigests(dockerd: Dockerd, ref: string): Promise<string[]> {
  const out = await dockerd.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}', ref]);
  return JSON.parse(out) as string[];
}

describe('docker and containerd pull through the mirror', () => {
  let origin: Registry;
  let mirror: RunningMirror;
  let image: BuiltImage;
  let dockerd: Dockerd;
  let mirrorHost: string;
  let prefixed: string;

  before(async () => {
    origin = await startRegistry({ logLevel: 'error' });
    const dir = await makeTempDir('images');
    image = await buildImage(join(dir, 'app'), { layers: [2_000_000, 500_000], tag: 'v1' });
    await pushLayout(origin.url, 'ci/app', 'v1', image.dir);
    // Named docker.io so that it is the default upstream, as Docker Hub is for the daemon's
    // registry-mirrors setting; it is the local origin all the same.
    mirror = await startTestMirror({
      upstreams: [`docker.io=${origin.url}`, `${origin.url}`],
    });
    mirrorHost = new URL(mirror.url).host;
    prefixed = `${mirrorHost}/${origin.host.replace(':', '_')}/ci/app`;
    dockerd = await startDockerd({ registryMirrors: [mirror.url] });
  });
  after(cleanupAll);

  test('docker pull by path prefix gets the image with the origin digest', async () => {
    await dockerd.docker(['pull', `${prefixed}:v1`]);
    const digests = await repoDigests(dockerd, `${prefixed}:v1`);
    assert.ok(digests.includes(`${prefixed}@${image.digest}`), JSON.stringify(digests));
  });

  test('docker pull by digest through the mirror works', async () => {
    await dockerd.docker(['rmi', '-f', `${prefixed}:v1`]).catch(() => '');
    await dockerd.docker(['pull', `${prefixed}@${image.digest}`]);
    const digests = await repoDigests(dockerd, `${prefixed}@${image.digest}`);
    assert.ok(digests.some((d) => d.endsWith(`@${image.digest}`)));
  });

  test('the daemon with registry-mirrors pulls Docker Hub names through the default upstream', async () => {
    // The daemon resolves the tag with HEAD, and GETs only what it does not have.
    const asked = async () =>
      (await metric(mirror.url, 'wharf_requests_total', { kind: 'manifest' })) +
      (await metric(mirror.url, 'wharf_requests_total', { kind: 'manifest_head' }));
    const before = await asked();
    await dockerd.docker(['pull', 'ci/app:v1']);
    const after = await asked();
    assert.ok(after > before, 'the daemon did not ask the mirror');
    const digests = await repoDigests(dockerd, 'ci/app:v1');
    assert.ok(digests.includes(`ci/app@${image.digest}`), JSON.stringify(digests));
  });

  test('ctr pulls through a hosts.toml mirror, routed to the origin by ?ns=', async () => {
    const other = await buildImage(join(await makeTempDir('img2'), 'tool'), { layers: [300_000], tag: 't1' });
    await pushLayout(origin.url, 'ci/tool', 't1', other.dir);
    // The default upstream is a decoy holding another image under the same name, and the origin
    // is not named in the path: only routing by ?ns= yields the origin's digest.
    const decoy = await startRegistry({ logLevel: 'error' });
    const impostor = await buildImage(join(await makeTempDir('img3'), 'tool'),
      { layers: [300_000], tag: 't1' });
    await pushLayout(decoy.url, 'ci/tool', 't1', impostor.dir);
    const nsMirror = await startTestMirror({
      upstreams: [`decoy=${decoy.url}`, origin.url],
      tweak: (config) => {
        for (const u of config.upstreams) u.default = u.name === 'decoy';
      },
    });
    const hostsDir = await makeTempDir('hosts');
    await mkdir(join(hostsDir, origin.host), { recursive: true });
    await writeFile(
      join(hostsDir, origin.host, 'hosts.toml'),
      `server = "${origin.url}"\n\n` +
        `[host."${nsMirror.url}"]\n  capabilities = ["pull", "resolve"]\n`,
    );

    const { stdout } = await run('ctr', [
      '-a', dockerd.containerdSocket, '-n', 'wharf-test', 'image', 'pull',
      '--hosts-dir', hostsDir, `${origin.host}/ci/tool:t1`,
    ]);

    assert.match(stdout, /done|unpacking|elapsed/);
    // Config and one layer came from the mirror, not the origin directly.
    const misses = await metric(nsMirror.url, 'wharf_requests_total',
      { kind: 'blob', outcome: 'miss' });
    assert.equal(misses, 2);
    const { stdout: list } = await run('ctr', ['-a', dockerd.containerdSocket, '-n', 'wharf-test', 'image', 'ls']);
    assert.ok(list.includes(other.digest), list);
    assert.ok(!list.includes(impostor.digest), list);
  });
});
