import assert from 'node:assert/strict';
import { chmod, writeFile } from 'node:fs/promises';
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { Agent } from 'undici';
import { buildImage, type BuiltImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { startTokenServer, type TokenServer } from './helpers/token-server.js';
import { cleanupAll, makeTempDir, registerCleanup } from './helpers/tmp.js';
import { captureLogs, pullThrough, upstreamName, withDockerConfig } from './support/auth.js';
import { get, startTestMirror } from './support/mirror.js';
import { isWharfError, type WharfError } from '../src/errors.js';
import { RegistryClient } from '../src/upstream/client.js';

const USER = 'ci-bot';
const PASSWORD = 's3cret-Pa55-do-not-log';
const IDENTITY = 'identity-token-do-not-log-4f1c9a';
const WRONG = 'wrong-identity-token-do-not-log-77aa';
// What `az acr login` writes beside an identity token: a placeholder user, no password.
const ACR_USER = '00000000-0000-0000-0000-000000000000';

/** A docker config folder whose `config.json` holds an identity token for `host`. */
async function dockerConfigWith(host: string, identitytoken: string): Promise<string> {
  const dir = await makeTempDir('docker-config');
  const auth = Buffer.from(`${ACR_USER}:`).toString('base64');
  await writeFile(join(dir, 'config.json'), JSON.stringify({
    auths: { [host]: { auth, identitytoken } },
  }));
  return dir;
}


/** A registry client of its own, with a connection pool closed after the tests. */
function clientFor(url: string): RegistryClient {
  const dispatcher = new Agent();
  registerCleanup(() => dispatcher.close());
  return new RegistryClient({ name: 'origin', url }, { dispatcher });
}

/** Asserts an UNAUTHORIZED that tells to log in again and holds no token anywhere. */
function assertRelogin(err: unknown): true {
  assert.ok(isWharfError(err), `not a WharfError: ${String(err)}`);
  const e = err as WharfError;
  assert.equal(e.code, 'WHARF_UPSTREAM_UNAUTHORIZED');
  assert.match(e.hint ?? '', /docker login/);
  const text = JSON.stringify({ message: e.message, hint: e.hint, detail: e.detail });
  for (const secret of [IDENTITY, WRONG]) assert.ok(!text.includes(secret), text);
  return true;
}

describe('identity tokens from docker login are traded for bearer tokens', () => {
  let tokens: TokenServer;
  let origin: Registry;
  let image: BuiltImage;

  before(async () => {
    tokens = await startTokenServer({ user: USER, password: PASSWORD, refreshToken: IDENTITY });
    origin = await startRegistry({ auth: { token: tokens }, logLevel: 'error' });
    image = await buildImage(join(await makeTempDir('img'), 'app'), { layers: [50_000], tag: 'v1' });
    await pushLayout(origin.url, 'team/app', 'v1', image.dir,
      { credentials: { user: USER, password: PASSWORD } });
  });
  after(cleanupAll);

  test('the mirror pulls with an identitytoken of config.json, and no token reaches the logs',
    async () => {
      const { lines, logger } = captureLogs();
      const dir = await dockerConfigWith(origin.host, IDENTITY);
      const mirror = await startTestMirror({ upstreams: [origin.url], logger });
      const asked = tokens.requests.length;

      await withDockerConfig(dir, () => pullThrough(mirror.url, origin, image));

      const seen = tokens.requests.slice(asked);
      assert.ok(seen.length >= 1, 'the mirror asked the token server');
      for (const r of seen) {
        assert.equal(r.method, 'POST');
        assert.equal(r.grant, 'refresh_token');
        assert.equal(r.clientId, 'wharf');
        assert.equal(r.service, tokens.service);
        assert.equal(r.account, USER);
      }
      assert.deepEqual(seen.map((r) => r.scopes), seen.map(() => ['repository:team/app:pull']));
      assert.ok(lines.length > 0, 'the mirror logged at debug level');
      for (const line of lines) {
        assert.ok(!line.includes(IDENTITY), `identity token in log: ${line}`);
        assert.ok(!/Bearer\s/i.test(line), `bearer token in log: ${line}`);
      }
    });

  test('a credential helper answering the <token> user gives the registry client its token',
    async () => {
      const dir = await makeTempDir('identity-helper');
      const helper = join(dir, 'docker-credential-wharfidentity');
      await writeFile(helper, '#!/bin/sh\ncat >/dev/null\n' +
        `echo '{"Username":"<token>","Secret":"${IDENTITY}"}'\n`);
      await chmod(helper, 0o755);
      await writeFile(join(dir, 'config.json'), JSON.stringify({ credsStore: 'wharfidentity' }));
      const asked = tokens.requests.length;

      const fetched = await withDockerConfig(dir,
        () => clientFor(origin.url).getManifest('team/app', 'v1'), true);

      assert.deepEqual(fetched?.body, image.bytes);
      const seen = tokens.requests.slice(asked);
      assert.deepEqual(seen.map((r) => [r.method, r.grant, r.status]),
        [['POST', 'refresh_token', 200]]);
    });

  test('a wrong identity token is refused with UNAUTHORIZED, named nowhere', async () => {
    const { lines, logger } = captureLogs();
    const dir = await dockerConfigWith(origin.host, WRONG);
    const mirror = await startTestMirror({ upstreams: [origin.url], logger });

    const res = await withDockerConfig(dir,
      () => get(`${mirror.url}/v2/${upstreamName(origin)}/team/app/manifests/v1`));
    await withDockerConfig(dir, () => assert.rejects(
      clientFor(origin.url).getManifest('team/app', 'v1'), assertRelogin));

    assert.equal(res.status, 401);
    const body = JSON.parse(res.body.toString()) as
      { errors: { code: string; detail: { hint: string } }[] };
    assert.equal(body.errors[0]!.code, 'UNAUTHORIZED');
    assert.match(body.errors[0]!.detail.hint, /docker login/);
    assert.ok(!res.body.toString().includes(WRONG));
    for (const line of lines) assert.ok(!line.includes(WRONG), `identity token in log: ${line}`);
  });

  test('a token server without OAuth2 POST gives UNAUTHORIZED, never a basic-auth GET',
    async () => {
      const getOnly = await startTokenServer({ user: USER, password: PASSWORD, refusePost: 405 });
      const reg = await startRegistry({ auth: { token: getOnly }, logLevel: 'error' });
      const dir = await dockerConfigWith(reg.host, IDENTITY);

      await withDockerConfig(dir, () => assert.rejects(
        clientFor(reg.url).getManifest('team/app', 'v1'), assertRelogin));

      assert.deepEqual(getOnly.requests.map((r) => [r.method, r.status]), [['POST', 405]]);
    });

  test('a basic challenge with only an identity token is UNAUTHORIZED, the token unsent',
    async () => {
      const seen: (string | undefined)[] = [];
      const server = createServer((req, res) => {
        seen.push(req.headers.authorization);
        res.writeHead(401, { 'www-authenticate': 'Basic realm="test"' }).end();
      });
      await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
      registerCleanup(() => new Promise<void>((r) => server.close(() => r())));
      const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
      const dir = await dockerConfigWith(new URL(url).host, IDENTITY);

      await withDockerConfig(dir, () => assert.rejects(
        clientFor(url).getManifest('team/app', 'v1'), assertRelogin));

      assert.ok(seen.length > 0);
      assert.deepEqual(seen.filter(Boolean), [], 'something was sent as basic auth');
    });
});
