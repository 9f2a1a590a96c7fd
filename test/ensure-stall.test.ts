import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent } from 'undici';
import { ensureImage } from '../src/agent/ensure.js';
import type { AgentEvent } from '../src/agent/events.js';
import { isWharfError } from '../src/errors.js';
import { parseEngineAddress } from '../src/engine/address.js';
import { DockerEngine } from '../src/engine/client.js';
import { startDockerd, type Dockerd } from './helpers/dockerd.js';
import { startFaultyOrigin } from './helpers/faulty-origin.js';
import { buildImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry } from './helpers/registry.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';

describe('a pull that stops making progress is cut and started again', () => {
  let dockerd: Dockerd;
  let engine: DockerEngine;
  const dispatcher = new Agent();

  before(async () => {
    dockerd = await startDockerd();
    engine = new DockerEngine(parseEngineAddress(dockerd.host));
  });
  after(async () => {
    await engine?.close();
    await dispatcher.close();
    await cleanupAll();
  });

  async function stalledOrigin(repo: string, times: number) {
    const dir = await makeTempDir('stall');
    const registry = await startRegistry({ logLevel: 'error' });
    const origin = await startFaultyOrigin(registry.url);
    const image = await buildImage(join(dir, 'img'), { layers: [1_500_000], tag: 'v1' });
    await pushLayout(registry.url, repo, 'v1', image.dir);
    // 16 KiB/s sends a 64 KiB read every four seconds: between reads the connection is open
    // and silent, as a dead link looks, and what is left to send when the test ends drains
    // within seconds (a slower rate would hold the test process open much longer).
    origin.slowBlob(image.layers[0]!.digest, 16 * 1024, { times });
    return { origin, image, name: `${origin.host}/${repo}:v1` };
  }

  test('a stalled layer download is cut, retried, and the image arrives', async () => {
    const { origin, name, image } = await stalledOrigin('stall/once', 1);
    const events: AgentEvent[] = [];
    // The engine keeps reading a silent connection until it breaks, as a NAT or a load
    // balancer breaks it in the end; here it breaks once wharf has cut the stalled pull.
    const drop = async () => {
      await origin.down();
      await origin.up();
    };

    const result = await ensureImage(name, {
      engine,
      dispatcher,
      stallMs: 1500,
      onEvent: (e) => {
        events.push(e);
        if (e.type === 'pull-retry') void drop();
      },
    });

    assert.equal(result.source, 'origin');
    assert.equal(result.digest, image.digest);
    const retries = events.filter((e) => e.type === 'pull-retry');
    assert.equal(retries.length, 1);
    assert.equal(retries[0]!.type === 'pull-retry' && retries[0]!.error.code,
      'WHARF_PULL_STALLED');
  });

  test('a pull that stalls on every attempt fails as stalled', async () => {
    const { name } = await stalledOrigin('stall/always', 10);

    await assert.rejects(
      ensureImage(name, { engine, dispatcher, stallMs: 1000, stallRetries: 1 }),
      (err) => isWharfError(err, 'WHARF_PULL_STALLED'),
    );
  });
});
