import assert from 'node:assert/strict';
import { chmod, copyFile, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { isWharfError } from '../src/errors.js';
import { engineAddressFrom, parseEngineAddress } from '../src/engine/address.js';
import {
  DockerEngine, MAX_API_VERSION, compareApiVersions, unreachable,
} from '../src/engine/client.js';
import { PullStream } from '../src/engine/pull-stream.js';
import { registryAuthFor } from '../src/engine/registry-auth.js';
import { resolveCredentials } from '../src/upstream/credentials.js';
import type { PullProgress } from '../src/engine/types.js';
import { startDockerd, type Dockerd } from './helpers/dockerd.js';
import { buildImage } from './helpers/images.js';
import { pushLayout } from './helpers/push.js';
import { startRegistry, type Registry } from './helpers/registry.js';
import { makeEnginePki, type EnginePki } from './helpers/tls.js';
import { cleanupAll, freePort, makeTempDir, registerCleanup } from './helpers/tmp.js';
import { runEnsure } from '../src/cli/ensure.js';
import { withDockerConfig } from './support/auth.js';
import { captureOutput } from './support/output.js';
import { createServer } from 'node:http';

describe('the engine client speaks the Docker Engine API', () => {
  let dockerd: Dockerd;
  let registry: Registry;
  let engine: DockerEngine;

  before(async () => {
    [dockerd, registry] = await Promise.all([
      startDockerd(),
      startRegistry({ logLevel: 'error' }),
    ]);
    engine = new DockerEngine(parseEngineAddress(dockerd.host));
  });
  after(async () => {
    await engine?.close();
    await cleanupAll();
  });

  test('it negotiates an API version no newer than the one wharf knows', async () => {
    const version = await engine.negotiate();
    assert.ok(compareApiVersions(version, MAX_API_VERSION) <= 0);
    const info = await engine.version();
    assert.equal(info.Os, 'linux');
  });

  test('a pull reports per-layer progress and the bytes it downloaded', async () => {
    const dir = await makeTempDir('engine-pull');
    const image = await buildImage(join(dir, 'img'), { layers: [400_000, 300_000], tag: 'v1' });
    await pushLayout(registry.url, 'engine/pull', 'v1', image.dir);
    const seen: PullProgress[] = [];

    const result = await engine.pull(`${registry.host}/engine/pull:v1`, {
      onProgress: (p) => seen.push(p),
    });

    const layerBytes = image.layers.reduce((sum, l) => sum + l.size, 0);
    assert.equal(result.digest, image.digest);
    assert.ok(result.bytes >= layerBytes, `${result.bytes} bytes, layers are ${layerBytes}`);
    assert.ok(seen.length > 0);
    assert.equal(seen.at(-1)!.layers.length, image.layers.length);
  });

  test('inspect, tag, list and remove work on a pulled image', async () => {
    const dir = await makeTempDir('engine-tag');
    const image = await buildImage(join(dir, 'img'), { layers: [100_000], tag: 'v1' });
    await pushLayout(registry.url, 'engine/tag', 'v1', image.dir);
    const ref = `${registry.host}/engine/tag@${image.digest}`;
    await engine.pull(ref);

    const pulled = await engine.inspectImage(ref);
    assert.ok(pulled);
    assert.deepEqual(pulled.RepoDigests, [ref]);
    await engine.tag(ref, `${registry.host}/engine/tag`, 'copy');
    const tagged = await engine.inspectImage(`${registry.host}/engine/tag:copy`);
    assert.equal(tagged?.Id, pulled.Id);
    const listed = await engine.listImages();
    assert.ok(listed.some((i) => i.Id === pulled.Id));

    // The engine drops a repository's digest references with its last tag there.
    assert.equal(await engine.removeImage(`${registry.host}/engine/tag:copy`), true);
    assert.equal(await engine.inspectImage(ref), null);
    assert.equal(await engine.removeImage(ref), false);
  });

  test('an error line in the middle of a 200 pull stream is a failure', async () => {
    const dir = await makeTempDir('engine-error');
    const image = await buildImage(join(dir, 'img'), { layers: [200_000, 200_000], tag: 'v1' });
    await pushLayout(registry.url, 'engine/broken', 'v1', image.dir);
    const layer = image.layers[1]!.digest.slice('sha256:'.length);
    const blobs = join(registry.dir, 'data', 'docker', 'registry', 'v2', 'blobs', 'sha256');
    await rm(join(blobs, layer.slice(0, 2), layer), { recursive: true });

    await assert.rejects(
      engine.pull(`${registry.host}/engine/broken:v1`),
      (err) => isWharfError(err, 'WHARF_PULL_FAILED'),
    );
  });

  test('an engine that is not there is unreachable, with a hint', async () => {
    const missing = new DockerEngine(parseEngineAddress(`unix://${dockerd.dir}/nothing.sock`));
    await assert.rejects(missing.info(), (err) => {
      assert.ok(isWharfError(err, 'WHARF_ENGINE_UNREACHABLE'));
      assert.match(err.hint ?? '', /--engine/);
      return true;
    });
    await missing.close();
    const port = await freePort();
    const tcp = new DockerEngine(parseEngineAddress(`tcp://127.0.0.1:${port}`));
    await assert.rejects(tcp.info(), (err) => isWharfError(err, 'WHARF_ENGINE_UNREACHABLE'));
    await tcp.close();
  });
});

describe('the pull stream is read line by line', () => {
  test('a retry countdown is one retry, and the layer starts again from zero', () => {
    const stream = new PullStream('r/x:v1');
    const line = (status: string, extra: object = {}) =>
      `${JSON.stringify({ status, id: 'aaa', ...extra })}\n`;
    stream.write(line('Downloading', { progressDetail: { current: 500, total: 1000 } }));
    for (const n of [5, 4, 3, 2, 1]) stream.write(line(`Retrying in ${n} seconds`));
    assert.equal(stream.retries, 1);
    assert.equal(stream.progress().bytes, 0);
    stream.write(line('Downloading', { progressDetail: { current: 100, total: 1000 } }));
    stream.write(line('Retrying in 10 seconds'));
    assert.equal(stream.retries, 2);
  });

  test('a download that breaks again before any progress is a retry too', () => {
    const stream = new PullStream('r/x:v1');
    const line = (status: string) => `${JSON.stringify({ status, id: 'aaa' })}\n`;
    stream.write(line('Downloading'));
    for (const n of [5, 4, 3, 2, 1]) stream.write(line(`Retrying in ${n} seconds`));
    for (const n of [10, 9]) stream.write(line(`Retrying in ${n} seconds`));
    assert.equal(stream.retries, 2);
  });

  test('a pull is downloading until every announced layer is downloaded or on disk', () => {
    const stream = new PullStream('r/x:v1');
    const line = (id: string, status: string) => `${JSON.stringify({ status, id })}\n`;
    assert.equal(stream.downloading, true, 'before the manifest, the registry is being asked');
    stream.write(`${JSON.stringify({ status: 'Pulling from r/x', id: 'v1' })}\n`);
    stream.write(line('aaa', 'Already exists') + line('bbb', 'Pulling fs layer') +
      line('ccc', 'Waiting'));
    assert.equal(stream.downloading, true);
    stream.write(line('bbb', 'Downloading') + line('bbb', 'Verifying Checksum'));
    stream.write(line('bbb', 'Download complete') + line('ccc', 'Downloading'));
    assert.equal(stream.downloading, true, 'one layer is still coming');
    stream.write(line('ccc', 'Download complete'));
    assert.equal(stream.downloading, false);
    stream.write(line('bbb', 'Extracting') + line('bbb', 'Pull complete'));
    assert.equal(stream.downloading, false);
  });
});

describe('an engine the user may not open says how to get access', () => {
  test('a denied unix socket (EACCES) and a denied named pipe (EPERM) get the same hint', () => {
    for (const code of ['EACCES', 'EPERM']) {
      const denied = Object.assign(new Error(`connect ${code} //./pipe/docker_engine`), { code });
      const err = unreachable('npipe:////./pipe/docker_engine', denied, false);
      assert.equal(err.code, 'WHARF_ENGINE_UNREACHABLE');
      assert.match(err.hint ?? '', /docker-users/, code);
    }
  });
});

describe('an identity token goes to the engine as docker sends it, never as a password', () => {
  after(cleanupAll);

  const decode = (header: string | undefined) =>
    JSON.parse(Buffer.from(header ?? '', 'base64url').toString('utf8')) as Record<string, string>;


  test('an identitytoken of config.json is sent as identitytoken with the username', async () => {
    const dir = await makeTempDir('identity-config');
    const config = join(dir, 'config.json');
    const auth = Buffer.from('ci:').toString('base64');
    await writeFile(config, JSON.stringify({
      auths: { 'registry.example.io': { auth, identitytoken: 'refresh-me' } },
    }));

    const header = decode(await registryAuthFor('registry.example.io', config));

    assert.deepEqual(header, { username: 'ci', identitytoken: 'refresh-me',
      serveraddress: 'registry.example.io' });
    const forClient = await withDockerConfig(dir,
      () => resolveCredentials('example', 'registry.example.io', undefined));
    // wharf's own requests use the token in the OAuth2 refresh grant, never as a password.
    assert.equal(forClient?.identityToken, 'refresh-me');
    assert.equal(forClient?.password, '');
  });

  test('a credential helper that answers <token> gives an identity token', async () => {
    const dir = await makeTempDir('identity-helper');
    const helper = join(dir, 'docker-credential-wharftest');
    await writeFile(helper, '#!/bin/sh\ncat >/dev/null\n' +
      'echo \'{"ServerURL":"registry.example.io","Username":"<token>","Secret":"refresh-me"}\'\n');
    await chmod(helper, 0o755);
    const config = join(dir, 'config.json');
    await writeFile(config, JSON.stringify({ credsStore: 'wharftest' }));

    const [header, forClient] = await withDockerConfig(dir, async () => [
      decode(await registryAuthFor('registry.example.io', config)),
      await resolveCredentials('example', 'registry.example.io', undefined),
    ] as const, true);

    assert.deepEqual(header,
      { identitytoken: 'refresh-me', serveraddress: 'registry.example.io' });
    assert.equal(forClient?.identityToken, 'refresh-me');
    assert.equal(forClient?.password, '');
  });
});

describe('engine addresses are read as DOCKER_HOST writes them', () => {
  test('a unix socket, a named pipe and tcp each become something undici can dial', () => {
    assert.deepEqual(parseEngineAddress('unix:///var/run/docker.sock'),
      { kind: 'unix', socketPath: '/var/run/docker.sock', text: 'unix:///var/run/docker.sock' });
    const pipe = parseEngineAddress('npipe:////./pipe/docker_engine');
    assert.equal(pipe.kind === 'npipe' && pipe.socketPath, '\\\\.\\pipe\\docker_engine');
    const tcp = parseEngineAddress('tcp://127.0.0.1');
    assert.equal(tcp.kind === 'tcp' && tcp.origin, 'http://127.0.0.1:2375');
  });

  test('the flag wins over DOCKER_HOST, and DOCKER_TLS_VERIFY turns tcp into TLS', () => {
    const certs = '/etc/wharf-test-certs-that-do-not-exist';
    const env = { DOCKER_HOST: 'tcp://10.0.0.1:2376', DOCKER_TLS_VERIFY: '1', DOCKER_CERT_PATH: certs };
    assert.equal(engineAddressFrom('unix:///tmp/d.sock', env).text, 'unix:///tmp/d.sock');
    const tls = engineAddressFrom(undefined, env);
    assert.equal(tls.kind === 'tcp' && tls.origin, 'https://10.0.0.1:2376');
    assert.deepEqual(tls.kind === 'tcp' && tls.tls, { verify: true, certPath: certs,
      caFile: undefined, certFile: undefined, keyFile: undefined });
    // No port: the TLS port, as the docker CLI picks it; DOCKER_TLS alone skips verification.
    const bare = engineAddressFrom('tcp://10.0.0.1', { DOCKER_TLS: '1', DOCKER_CERT_PATH: certs });
    assert.equal(bare.kind === 'tcp' && bare.origin, 'https://10.0.0.1:2376');
    assert.equal(bare.kind === 'tcp' && bare.tls?.verify, false);
    const plain = engineAddressFrom(undefined, { DOCKER_HOST: 'tcp://10.0.0.1' });
    assert.equal(plain.kind === 'tcp' && plain.origin, 'http://10.0.0.1:2375');
  });

  test('an address wharf cannot use names the option it came from', () => {
    for (const text of ['ssh://user@host', 'unix://relative.sock', 'npipe://docker', 'ftp://x']) {
      assert.throws(() => parseEngineAddress(text), (err) => {
        assert.ok(isWharfError(err, 'WHARF_BAD_USAGE'));
        assert.match(err.message, /^--engine/);
        return true;
      });
    }
  });

  test('an address with credentials is refused without quoting the password', () => {
    const texts = ['tcp://user:s3cret@10.0.0.1:2375', 'tcp://user:s3c/r@t@10.0.0.1',
      'unix://user:s3cret@host', 'https://user:s3cret@10.0.0.1:2376'];
    for (const text of texts) {
      assert.throws(() => parseEngineAddress(text, 'DOCKER_HOST'), (err) => {
        assert.ok(isWharfError(err, 'WHARF_BAD_USAGE'));
        assert.match(err.message, /^DOCKER_HOST/);
        assert.doesNotMatch(`${err.message} ${err.hint ?? ''}`, /s3c/, text);
        return true;
      });
    }
  });
});

describe('an engine behind TLS is reached the way the docker CLI reaches it', () => {
  let dockerd: Dockerd;
  let registry: Registry;
  let pki: EnginePki;
  let port: number;

  before(async () => {
    pki = await makeEnginePki();
    port = await freePort();
    [dockerd, registry] = await Promise.all([
      startDockerd({ tls: { port, ca: pki.ca, cert: pki.serverCert, key: pki.serverKey } }),
      startRegistry({ logLevel: 'error' }),
    ]);
  });
  after(cleanupAll);

  const tlsEnv = (certPath: string) => ({
    DOCKER_HOST: `tcp://127.0.0.1:${port}`,
    DOCKER_TLS_VERIFY: '1',
    DOCKER_CERT_PATH: certPath,
  });

  test('wharf ensure pulls over TLS with the certificates of DOCKER_CERT_PATH', async () => {
    const dir = await makeTempDir('engine-tls');
    const image = await buildImage(join(dir, 'img'), { layers: [200_000], tag: 'v1' });
    await pushLayout(registry.url, 'engine/tls', 'v1', image.dir);
    const io = captureOutput();
    const env = { ...tlsEnv(pki.clientDir), DOCKER_CONFIG: dockerd.dockerConfig };
    const code = await runEnsure(`${registry.host}/engine/tls:v1`, { json: true },
      { stdout: io.stdout, stderr: io.stderr, env });
    assert.equal(code, 0, io.out);
    const result = JSON.parse(io.out) as { digest: string; source: string };
    assert.equal(result.digest, image.digest);
    assert.equal(result.source, 'origin');
    // The image is in the engine the socket also reaches: the same daemon, spoken to over TLS.
    const digests = await dockerd.docker(['image', 'inspect', '--format', '{{json .RepoDigests}}',
      `${registry.host}/engine/tls:v1`]);
    assert.match(digests, new RegExp(image.digest));
  });

  test('certificates the engine does not trust, or none, fail with a hint about TLS', async () => {
    // The engine's CA but a client certificate another CA signed: the engine says no.
    const wrongClient = await makeTempDir('wrong-client');
    await copyFile(pki.ca, join(wrongClient, 'ca.pem'));
    for (const f of ['cert.pem', 'key.pem']) await copyFile(join(pki.strangerDir, f), join(wrongClient, f));
    for (const certPath of [pki.strangerDir, await makeTempDir('no-certs'), wrongClient]) {
      const engine = new DockerEngine(engineAddressFrom(undefined, tlsEnv(certPath)));
      await assert.rejects(engine.info(), (err) => {
        assert.ok(isWharfError(err, 'WHARF_ENGINE_UNREACHABLE'), String(err));
        assert.match(err.hint ?? '', /DOCKER_CERT_PATH/, err.message);
        return true;
      });
      await engine.close();
    }
    // Plain HTTP to the TLS port is refused too: nothing goes out unencrypted.
    const plain = new DockerEngine(engineAddressFrom(`tcp://127.0.0.1:${port}`, {}));
    await assert.rejects(plain.info());
    await plain.close();
  });
});

describe('API version negotiation with engines newer than wharf', () => {
  after(cleanupAll);

  /**
   * An engine that answers as Docker 29 does: API 1.52 offered, nothing older than `minimum`
   * accepted. Debian's dockerd is older than wharf's newest API, so it cannot show this.
   */
  async function newerEngine(minimum: string) {
    const dir = await makeTempDir('engine-newer');
    const socketPath = join(dir, 'docker.sock');
    const seen: string[] = [];
    const server = createServer((req, res) => {
      seen.push(req.url ?? '');
      res.setHeader('api-version', '1.52');
      if (req.url === '/_ping') return res.end('OK');
      if (req.url === '/version') {
        res.setHeader('content-type', 'application/json');
        return res.end(JSON.stringify({ Os: 'linux', Arch: 'amd64', Version: '29.1.0',
          ApiVersion: '1.52', MinAPIVersion: minimum }));
      }
      const version = /^\/v(\d+\.\d+)\//.exec(req.url ?? '')?.[1] ?? '0.0';
      if (compareApiVersions(version, minimum) < 0) {
        res.statusCode = 400;
        return res.end(JSON.stringify({ message: `client version ${version} is too old. `
          + `Minimum supported API version is ${minimum}` }));
      }
      res.statusCode = 404;
      res.end(JSON.stringify({ message: 'No such image' }));
    });
    await new Promise<void>((r) => server.listen(socketPath, r));
    registerCleanup(() => new Promise((r) => server.close(r)));
    const engine = new DockerEngine(parseEngineAddress(`unix://${socketPath}`));
    registerCleanup(() => engine.close());
    return { engine, seen };
  }

  test('an engine that refuses wharf\'s newest API is spoken to in its oldest one', async () => {
    const { engine, seen } = await newerEngine('1.44');

    assert.equal(await engine.negotiate(), '1.44');
    assert.equal(await engine.inspectImage('absent:1'), null);
    assert.ok(seen.includes('/v1.44/images/absent:1/json'), seen.join(' '));
  });

  test('an engine that still accepts wharf\'s newest API is spoken to in that one', async () => {
    const { engine } = await newerEngine('1.24');

    assert.equal(await engine.negotiate(), MAX_API_VERSION);
    assert.equal(await engine.inspectImage('absent:1'), null);
  });
});
