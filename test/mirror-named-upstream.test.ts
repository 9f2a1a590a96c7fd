import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { runEnsure } from '../src/cli/ensure.js';
import { startDockerd, type Dockerd } from './helpers/dockerd.js';
import { buildImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry } from './helpers/registry.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';
import { metric, startTestMirror } from './support/mirror.js';
import { captureOutput } from './support/output.js';

/**
 * `wharf ensure` and `wharf warm` name an image's registry in the mirror's path as its default
 * NAME (host, `:` as `_`): the mirror must find an upstream by it whatever NAME it was given.
 */
describe('ensure through a mirror whose upstream has a NAME of its own', () => {
  let dockerd: Dockerd;

  before(async () => {
    dockerd = await startDockerd();
  });
  after(cleanupAll);

  test('the image comes from the mirror, not the origin', async () => {
    const origin = await startRegistry({ logLevel: 'error' });
    const mirror = await startTestMirror({ upstreams: [`corp=${origin.url}`], tagTtlMs: 0 });
    const image = await buildImage(join(await makeTempDir('named'), 'v1'), { layers: [200_000], tag: 'v1' });
    await pushLayout(origin.url, 'ci/named', 'v1', image.dir);

    const io = captureOutput();
    const env = { DOCKER_HOST: dockerd.host, DOCKER_CONFIG: dockerd.dockerConfig };
    const code = await runEnsure(`${origin.host}/ci/named:v1`, { json: true, mirror: mirror.url },
      { stdout: io.stdout, stderr: io.stderr, env });

    assert.equal(code, 0, io.out + io.err);
    const json = JSON.parse(io.out) as { source: string; digest: string };
    assert.equal(json.source, 'mirror');
    assert.equal(json.digest, image.digest);
    const served = await metric(mirror.url, 'wharf_upstream_fetched_bytes_total', { upstream: 'corp' });
    assert.ok(served >= image.layers[0]!.size, `the mirror fetched the layer from corp (${served} bytes)`);
  });
});
