import assert from 'node:assert/strict';
import { mkdir, readFile, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { buildImage, type BuiltImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { startTokenServer, type TokenServer } from './helpers/token-server.js';
import { cleanupAll, makeTempDir, registerCleanup } from './helpers/tmp.js';
import { captureLogs, pullThrough, upstreamName } from './support/auth.js';
import { get, startTestMirror } from './support/mirror.js';
import { silentLogger } from '../src/log.js';
import { loadMirrorConfig } from '../src/mirror/config.js';
import { startMirror } from '../src/mirror/server.js';

const USER = 'ci-bot';
const PASSWORD = 's3cret-Pa55-do-not-log';

/** Listens on a free loopback port; returns the base URL. Closed by cleanupAll. */
async function listen(server: Server): Promise<string> {
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  registerCleanup(() => new Promise((r) => server.close(r)));
  return `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
}

describe('the mirror authenticates to private upstreams', () => {
  let basic: Registry;
  let tokens: TokenServer;
  let bearer: Registry;
  let image: BuiltImage;

  before(async () => {
    basic = await startRegistry({ auth: { htpasswd: { user: USER, password: PASSWORD } }, logLevel: 'error' });
    tokens = await startTokenServer({ user: USER, password: PASSWORD, expiresIn: 300 });
    bearer = await startRegistry({ auth: { token: tokens }, logLevel: 'error' });
    image = await buildImage(join(await makeTempDir('img'), 'app'), { layers: [100_000], tag: 'v1' });
    const credentials = { user: USER, password: PASSWORD };
    await pushLayout(basic.url, 'team/app', 'v1', image.dir, { credentials });
    await pushLayout(bearer.url, 'team/app', 'v1', image.dir, { credentials });
  });
  after(cleanupAll);


  test('basic auth with credentials from the config file works and never reaches the logs', async () => {
    const { lines, logger } = captureLogs();
    const mirror = await startTestMirror({
      upstreams: [basic.url],
      logger,
      tweak: (c) => (c.upstreams[0]!.credentials = { username: USER, password: PASSWORD }),
    });
    await pullThrough(mirror.url, basic, image);
    const b64 = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
    for (const line of lines) {
      assert.ok(!line.includes(PASSWORD) && !line.includes(b64), `credential in log: ${line}`);
    }
  });

  test('without credentials the mirror answers UNAUTHORIZED with a hint', async () => {
    const mirror = await startTestMirror({ upstreams: [basic.url] });
    const res = await get(`${mirror.url}/v2/${upstreamName(basic)}/team/app/manifests/v1`);
    assert.equal(res.status, 401);
    const body = JSON.parse(res.body.toString()) as { errors: { code: string; detail: { hint: string } }[] };
    assert.equal(body.errors[0]!.code, 'UNAUTHORIZED');
    assert.match(body.errors[0]!.detail.hint, /credentials/);
    assert.ok(!res.body.toString().includes(PASSWORD));
  });

  test('with a wrong password the hint says to check the credentials, which it never quotes', async () => {
    const wrong = 'not-the-password-7f3a';
    const mirror = await startTestMirror({
      upstreams: [basic.url],
      tweak: (c) => (c.upstreams[0]!.credentials = { username: USER, password: wrong }),
    });
    const res = await get(`${mirror.url}/v2/${upstreamName(basic)}/team/app/manifests/v1`);
    assert.equal(res.status, 401);
    const body = JSON.parse(res.body.toString()) as { errors: { code: string; detail: { hint: string } }[] };
    assert.equal(body.errors[0]!.code, 'UNAUTHORIZED');
    assert.match(body.errors[0]!.detail.hint, /check the username and password configured/);
    assert.ok(!res.body.toString().includes(wrong));
  });

  test('credentials come from environment variables named after the upstream', async () => {
    const prefix = `WHARF_${upstreamName(basic).toUpperCase().replace(/[^A-Z0-9]+/g, '_')}`;
    process.env[`${prefix}_USERNAME`] = USER;
    process.env[`${prefix}_PASSWORD`] = PASSWORD;
    try {
      const mirror = await startTestMirror({ upstreams: [basic.url] });
      await pullThrough(mirror.url, basic, image);
    } finally {
      delete process.env[`${prefix}_USERNAME`];
      delete process.env[`${prefix}_PASSWORD`];
    }
  });

  test('credentials come from the docker config.json of the user', async () => {
    const dir = await makeTempDir('docker-config');
    await mkdir(dir, { recursive: true });
    const auth = Buffer.from(`${USER}:${PASSWORD}`).toString('base64');
    await writeFile(join(dir, 'config.json'), JSON.stringify({ auths: { [basic.host]: { auth } } }));
    const previous = process.env.DOCKER_CONFIG;
    process.env.DOCKER_CONFIG = dir;
    try {
      const mirror = await startTestMirror({ upstreams: [basic.url] });
      await pullThrough(mirror.url, basic, image);
    } finally {
      if (previous === undefined) delete process.env.DOCKER_CONFIG;
      else process.env.DOCKER_CONFIG = previous;
    }
  });

  test('the bearer-token flow gets one token per repository scope and reuses it', async () => {
    const mirror = await startTestMirror({
      upstreams: [bearer.url],
      tagTtlMs: 0,
      tweak: (c) => (c.upstreams[0]!.credentials = { username: USER, password: PASSWORD }),
    });
    const before = tokens.tokenRequests;
    await pullThrough(mirror.url, bearer, image);
    await pullThrough(mirror.url, bearer, image);
    const scoped = tokens.requests
      .slice(before)
      .filter((r) => r.scopes.some((s) => s.includes('team/app')));
    assert.equal(scoped.length, 1, `token requests: ${JSON.stringify(scoped)}`);
    assert.equal(scoped[0]!.account, USER);
  });

  test('an anonymous bearer flow gets a token without credentials', async () => {
    const anonTokens = await startTokenServer({ user: USER, password: PASSWORD, anonymousPull: true });
    const anon = await startRegistry({ auth: { token: anonTokens }, logLevel: 'error' });
    await pushLayout(anon.url, 'team/app', 'v1', image.dir, { credentials: { user: USER, password: PASSWORD } });
    const mirror = await startTestMirror({ upstreams: [anon.url] });
    const before = anonTokens.tokenRequests;
    await pullThrough(mirror.url, anon, image);
    const asked = anonTokens.requests.slice(before);
    assert.ok(asked.length >= 1, 'the mirror asked the token server');
    assert.ok(asked.every((r) => !r.account), `anonymous requests only: ${JSON.stringify(asked)}`);
  });

  test('an expired token is replaced by a fresh one for the same scope', async () => {
    // Six seconds of life, less the five the client keeps in hand: stale after one.
    const shortTokens = await startTokenServer({ user: USER, password: PASSWORD, expiresIn: 6 });
    const short = await startRegistry({ auth: { token: shortTokens }, logLevel: 'error' });
    await pushLayout(short.url, 'team/app', 'v1', image.dir, { credentials: { user: USER, password: PASSWORD } });
    const mirror = await startTestMirror({
      upstreams: [short.url],
      tagTtlMs: 0,
      tweak: (c) => (c.upstreams[0]!.credentials = { username: USER, password: PASSWORD }),
    });
    const pushed = shortTokens.requests.length;
    const scoped = () => shortTokens.requests.slice(pushed)
      .filter((r) => r.scopes.some((x) => x.includes('team/app')));
    const url = `${mirror.url}/v2/${upstreamName(short)}/team/app/manifests/v1`;
    assert.equal((await get(url)).status, 200);
    assert.equal(scoped().length, 1);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal((await get(url)).status, 200);
    assert.equal(scoped().length, 2, 'a new token after the first expired');
  });

  test('credentials written in the YAML config file reach the upstream', async () => {
    const dir = await makeTempDir('yaml-credentials');
    const path = join(dir, 'mirror.yaml');
    await writeFile(path, [
      `listen: 127.0.0.1:0`,
      `data: ${join(dir, 'data')}`,
      'upstreams:',
      `  - url: ${basic.url}`,
      `    username: ${USER}`,
      `    password: ${PASSWORD}`,
      '',
    ].join('\n'));
    const mirror = await startMirror(await loadMirrorConfig({ config: path }), silentLogger());
    registerCleanup(() => mirror.close());
    await pullThrough(mirror.url, basic, image);
  });

  test('a redirect to blob storage is followed without the upstream credentials', async () => {
    const layer = image.layers[0]!;
    const bytes = await readFile(layer.path);
    const seen: (string | undefined)[] = [];
    const storage = await listen(createServer((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(200, { 'content-length': bytes.length }).end(bytes);
    }));
    const expected = `Basic ${Buffer.from(`${USER}:${PASSWORD}`).toString('base64')}`;
    const origin = await listen(createServer((req, res) => {
      if (req.headers.authorization !== expected) {
        return res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' }).end();
      }
      res.writeHead(307, { location: `${storage}/bucket/${layer.digest}?sig=abc` }).end();
    }));
    const mirror = await startTestMirror({
      upstreams: [`cdn=${origin}`],
      tweak: (c) => (c.upstreams[0]!.credentials = { username: USER, password: PASSWORD }),
    });
    const res = await get(`${mirror.url}/v2/cdn/team/app/blobs/${layer.digest}`);
    assert.equal(res.status, 200);
    assert.deepEqual(res.body, bytes);
    assert.ok(seen.length > 0);
    assert.deepEqual(seen.filter(Boolean), [], 'credentials reached the blob storage');
  });

  test('wrong credentials for a token server are refused with UNAUTHORIZED', async () => {
    const mirror = await startTestMirror({
      upstreams: [bearer.url],
      tweak: (c) => (c.upstreams[0]!.credentials = { username: USER, password: 'wrong' }),
    });
    const res = await get(`${mirror.url}/v2/${upstreamName(bearer)}/team/app/manifests/v1`);
    assert.equal(res.status, 401);
    assert.equal((JSON.parse(res.body.toString()) as { errors: { code: string }[] }).errors[0]!.code, 'UNAUTHORIZED');
  });
});
