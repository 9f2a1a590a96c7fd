import assert from 'node:assert/strict';
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, describe, test } from 'node:test';
import { isWharfError } from '../src/errors.js';
import { loadMirrorConfig, PUBLIC_UPSTREAMS } from '../src/mirror/config.js';
import { parseRange } from '../src/mirror/range.js';
import { Router } from '../src/mirror/routing.js';
import { parseManifest } from '../src/oci/manifest.js';
import { parseImageRef } from '../src/oci/reference.js';
import { parseChallenge } from '../src/upstream/challenge.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';

after(cleanupAll);

async function configFile(text: string): Promise<string> {
  const path = join(await makeTempDir('config'), 'mirror.yaml');
  await writeFile(path, text);
  return path;
}

function rejectsWith(code: string, pattern: RegExp) {
  return (err: unknown) => isWharfError(err) && err.code === code && pattern.test(err.message);
}

describe('configuration', () => {
  test('with no upstream given, the public registries are configured, docker.io the default', async () => {
    const config = await loadMirrorConfig({});
    assert.deepEqual(config.upstreams.map((u) => u.name), PUBLIC_UPSTREAMS.map((u) => u.name));
    assert.equal(config.upstreams.find((u) => u.default)?.name, 'docker.io');
    assert.deepEqual(config.listen, { host: '127.0.0.1', port: 5000 });
    assert.equal(config.tagTtlMs, 60_000);
  });

  test('an upstream URL with a port gets the name host_port', async () => {
    const config = await loadMirrorConfig({ upstream: ['http://127.0.0.1:5001', 'corp=https://r.example.io'] });
    assert.deepEqual(config.upstreams.map((u) => u.name), ['127.0.0.1_5001', 'corp']);
  });

  test('an unknown key is refused with its path named', async () => {
    const path = await configFile('upstreams:\n  - url: https://r.example.io\n    pasword: x\n');
    await assert.rejects(loadMirrorConfig({ config: path }), rejectsWith('WHARF_CONFIG_INVALID', /upstreams\.0\.pasword: unknown key/));
    const top = await configFile('tagTTL: 5s\n');
    await assert.rejects(loadMirrorConfig({ config: top }), rejectsWith('WHARF_CONFIG_INVALID', /tagTTL: unknown key/));
    const nested = await configFile('cache:\n  maxsize: 1GB\n');
    await assert.rejects(loadMirrorConfig({ config: nested }), rejectsWith('WHARF_CONFIG_INVALID', /cache\.maxsize/));
  });

  test('bad values name the option and say what is expected', async () => {
    await assert.rejects(loadMirrorConfig({ listen: 'nowhere' }), rejectsWith('WHARF_CONFIG_INVALID', /--listen/));
    await assert.rejects(
      loadMirrorConfig({ upstream: ['https://user:pw@r.example.io'] }),
      (err: unknown) => isWharfError(err, 'WHARF_CONFIG_INVALID') && !err.message.includes('pw'),
    );
    // Passwords holding `/`, `#` or `@` make a URL that does not parse: still never quoted.
    for (const secret of ['pa/ss7q', 's3cr#t7q', 'p@ss7q']) {
      for (const value of [`https://ci:${secret}@r.example.io`, `hub=https://ci:${secret}@r.example.io`]) {
        await assert.rejects(loadMirrorConfig({ upstream: [value] }), (err: unknown) =>
          isWharfError(err, 'WHARF_CONFIG_INVALID') && !err.message.includes('7q'), value);
      }
      const file = await configFile(`upstreams:\n  - url: "https://ci:${secret}@r.example.io"\n`);
      await assert.rejects(loadMirrorConfig({ config: file }), (err: unknown) =>
        isWharfError(err, 'WHARF_CONFIG_INVALID') && !err.message.includes('7q') &&
        !String(err.hint).includes('7q'), secret);
    }
    const ttl = await configFile('tagTtl: soon\n');
    await assert.rejects(loadMirrorConfig({ config: ttl }), rejectsWith('WHARF_CONFIG_INVALID', /tagTtl/));
    const size = await configFile('cache:\n  maxSize: lots\n');
    await assert.rejects(loadMirrorConfig({ config: size }), rejectsWith('WHARF_CONFIG_INVALID', /cache\.maxSize/));
    const two = await configFile('upstreams:\n  - {url: https://a.example.io, default: true}\n  - {url: https://b.example.io, default: true}\n');
    await assert.rejects(loadMirrorConfig({ config: two }), rejectsWith('WHARF_CONFIG_INVALID', /only one upstream/));
  });

  test('a YAML syntax error names the line and never quotes it: it may hold a password', async () => {
    const path = await configFile(
      'upstreams:\n  - url: https://r.example.io\n    password: s3cr3t-pw: x\n');
    await assert.rejects(loadMirrorConfig({ config: path }), (err: unknown) => {
      assert.ok(isWharfError(err, 'WHARF_CONFIG_INVALID'));
      assert.match(err.message, /not valid YAML at line 3/);
      assert.ok(!err.message.includes('s3cr3t'), err.message);
      return true;
    });
  });

  test('a password can come from an environment variable', async () => {
    process.env.WHARF_TEST_PW = 'from-env';
    const path = await configFile('upstreams:\n  - url: https://r.example.io\n    username: u\n    passwordEnv: WHARF_TEST_PW\n');
    const config = await loadMirrorConfig({ config: path });
    assert.deepEqual(config.upstreams[0]!.credentials, { username: 'u', password: 'from-env' });
    delete process.env.WHARF_TEST_PW;
  });
});

describe('routing', () => {
  const router = new Router([
    { name: 'docker.io', url: 'https://registry-1.docker.io', default: false },
    { name: 'registry.example.io', url: 'https://registry.example.io', default: false },
    { name: '127.0.0.1_5001', url: 'http://127.0.0.1:5001', default: false },
  ]);

  test('the first path component names the upstream', () => {
    const r = router.resolve('/v2/registry.example.io/ci/build/manifests/v1', null);
    assert.equal(r.kind, 'manifest');
    if (r.kind !== 'manifest') return;
    assert.equal(r.upstream.name, 'registry.example.io');
    assert.equal(r.repo, 'ci/build');
    assert.deepEqual(r.ref, { kind: 'tag', tag: 'v1' });
  });

  test('?ns= picks the upstream by name or by its URL host and port', () => {
    const byHost = router.resolve('/v2/ci/build/blobs/sha256:' + 'a'.repeat(64), '127.0.0.1:5001');
    assert.equal(byHost.kind === 'blob' && byHost.upstream.name, '127.0.0.1_5001');
    const byName = router.resolve('/v2/ci/build/manifests/v1', 'registry.example.io');
    assert.equal(byName.kind === 'manifest' && byName.upstream.name, 'registry.example.io');
  });

  test('no name and no ?ns= goes to docker.io, with library/ for official images', () => {
    const r = router.resolve('/v2/alpine/manifests/3.20', null);
    assert.equal(r.kind === 'manifest' && r.upstream.name, 'docker.io');
    assert.equal(r.kind === 'manifest' && r.repo, 'library/alpine');
  });

  test('a ?ns= naming no configured upstream is NAME_UNKNOWN, never a new upstream', () => {
    assert.throws(() => router.resolve('/v2/ci/build/manifests/v1', 'evil.example.com'),
      (err: unknown) => isWharfError(err, 'WHARF_UPSTREAM_UNKNOWN'));
  });

  test('without docker.io or a default, a bare path is NAME_UNKNOWN', () => {
    const only = new Router([{ name: 'corp', url: 'https://r.corp.example', default: false }]);
    assert.throws(() => only.resolve('/v2/ci/build/manifests/v1', null),
      (err: unknown) => isWharfError(err, 'WHARF_UPSTREAM_UNKNOWN'));
  });

  test('Docker Hub under another name is the default upstream when none is marked', () => {
    const urls = ['https://registry-1.docker.io', 'https://index.docker.io', 'https://docker.io'];
    for (const url of urls) {
      const hub = new Router([
        { name: 'registry.example.io', url: 'https://registry.example.io', default: false },
        { name: 'hub', url, default: false },
      ]);
      const r = hub.resolve('/v2/alpine/manifests/3.20', null);
      assert.equal(r.kind === 'manifest' && r.upstream.name, 'hub', url);
      assert.equal(r.kind === 'manifest' && r.repo, 'library/alpine', url);
    }
  });

  test('an upstream marked default wins over Docker Hub', () => {
    const marked = new Router([
      { name: 'hub', url: 'https://registry-1.docker.io', default: false },
      { name: 'corp', url: 'https://r.corp.example', default: true },
    ]);
    const r = marked.resolve('/v2/ci/build/manifests/v1', null);
    assert.equal(r.kind === 'manifest' && r.upstream.name, 'corp');
  });

  test('?ns= with any Docker Hub host reaches the Docker Hub upstream whatever its name', () => {
    const hub = new Router([
      { name: 'registry.example.io', url: 'https://registry.example.io', default: true },
      { name: 'hub', url: 'https://registry-1.docker.io', default: false },
    ]);
    for (const ns of ['docker.io', 'registry-1.docker.io', 'index.docker.io', 'docker.io:443']) {
      const r = hub.resolve('/v2/alpine/manifests/3.20', ns);
      assert.equal(r.kind === 'manifest' && r.upstream.name, 'hub', ns);
      assert.equal(r.kind === 'manifest' && r.repo, 'library/alpine', ns);
    }
  });

  test('?ns= with Docker Hub\'s hosts is NAME_UNKNOWN when Docker Hub is not an upstream', () => {
    const noHub = new Router([
      { name: 'registry.example.io', url: 'https://registry.example.io', default: true },
    ]);
    for (const ns of ['docker.io', 'registry-1.docker.io', 'index.docker.io']) {
      assert.throws(() => noHub.resolve('/v2/alpine/manifests/3.20', ns),
        (err: unknown) => isWharfError(err, 'WHARF_UPSTREAM_UNKNOWN'), ns);
    }
  });

  test('?ns= with its scheme\'s default port picks an upstream whose URL omits it', () => {
    const ports = new Router([
      { name: 'secure', url: 'https://registry.example.io', default: false },
      { name: 'plain', url: 'http://plain.example.io', default: false },
    ]);
    const https = ports.resolve('/v2/ci/build/manifests/v1', 'registry.example.io:443');
    assert.equal(https.kind === 'manifest' && https.upstream.name, 'secure');
    const http = ports.resolve('/v2/ci/build/manifests/v1', 'plain.example.io:80');
    assert.equal(http.kind === 'manifest' && http.upstream.name, 'plain');
    const wrong = ['registry.example.io:80', 'plain.example.io:443', 'registry.example.io:5000'];
    for (const ns of wrong) {
      assert.throws(() => ports.resolve('/v2/ci/build/manifests/v1', ns),
        (err: unknown) => isWharfError(err, 'WHARF_UPSTREAM_UNKNOWN'), ns);
    }
  });

  test('pins of Docker Hub images reach the Docker Hub upstream whatever its name', () => {
    const hub = new Router([{ name: 'hub', url: 'https://registry-1.docker.io', default: false }]);
    const pin = hub.forImage('alpine:3.20');
    assert.equal(pin.upstream.name, 'hub');
    assert.equal(pin.repo, 'library/alpine');
  });

  test('an upstream with a NAME of its own is also found by its host as default NAME', () => {
    const named = new Router([
      { name: 'hub', url: 'https://registry-1.docker.io', default: false },
      { name: 'corp', url: 'https://registry.example.io', default: false },
      { name: 'o', url: 'http://127.0.0.1:5101', default: false },
    ]);
    const cases: [string, string, string][] = [
      ['/v2/corp/ci/build/manifests/v1', 'corp', 'ci/build'],
      ['/v2/registry.example.io/ci/build/manifests/v1', 'corp', 'ci/build'],
      ['/v2/127.0.0.1_5101/ci/build/manifests/v1', 'o', 'ci/build'],
      // How `wharf ensure` names a Docker Hub image: docker.io, whatever the upstream's NAME.
      ['/v2/docker.io/library/alpine/manifests/3.20', 'hub', 'library/alpine'],
      ['/v2/docker.io/alpine/manifests/3.20', 'hub', 'library/alpine'],
    ];
    for (const [path, upstream, repo] of cases) {
      const r = named.resolve(path, null);
      assert.equal(r.kind === 'manifest' && r.upstream.name, upstream, path);
      assert.equal(r.kind === 'manifest' && r.repo, repo, path);
    }
    assert.equal(named.forImage('127.0.0.1_5101/ci/build:v1').upstream.name, 'o');
    assert.equal(named.forImage('docker.io/alpine').repo, 'library/alpine');
    // A NAME wins over another upstream's host.
    const clash = new Router([
      { name: 'registry.example.io', url: 'https://mirror-of-it.example', default: false },
      { name: 'real', url: 'https://registry.example.io', default: false },
    ]);
    const r = clash.resolve('/v2/registry.example.io/ci/build/manifests/v1', null);
    assert.equal(r.kind === 'manifest' && r.upstream.name, 'registry.example.io');
  });

  test('pins name images by registry host or by upstream name', () => {
    assert.equal(router.forImage('registry.example.io/ci/build:v1').upstream.name, 'registry.example.io');
    assert.equal(router.forImage('127.0.0.1_5001/ci/build:v1').repo, 'ci/build');
    assert.equal(router.forImage('127.0.0.1:5001/ci/build:v1').upstream.name, '127.0.0.1_5001');
    assert.equal(router.forImage('alpine').repo, 'library/alpine');
  });
});

describe('parsers', () => {
  test('image references', () => {
    assert.deepEqual(parseImageRef('alpine'), { registry: 'docker.io', repository: 'library/alpine', tag: 'latest' });
    assert.deepEqual(parseImageRef('localhost:5000/a/b:1.0'), { registry: 'localhost:5000', repository: 'a/b', tag: '1.0' });
    const digest = `sha256:${'b'.repeat(64)}`;
    assert.deepEqual(parseImageRef(`r.example.io/x@${digest}`), { registry: 'r.example.io', repository: 'x', digest });
    for (const bad of ['', 'UPPER/case', 'a b', 'x@sha256:12', 'x:-tag']) {
      assert.throws(() => parseImageRef(bad), (e: unknown) => isWharfError(e));
    }
  });

  test('a manifest without mediaType takes it from a Content-Type with parameters', () => {
    const body = Buffer.from(JSON.stringify({
      schemaVersion: 2,
      config: { mediaType: 'application/vnd.oci.image.config.v1+json', size: 2,
        digest: `sha256:${'c'.repeat(64)}` },
      layers: [],
    }));
    const parsed = parseManifest(body, 'application/vnd.oci.image.manifest.v1+json; charset=utf-8');
    assert.equal(parsed.kind, 'manifest');
    assert.equal(parsed.mediaType, 'application/vnd.oci.image.manifest.v1+json');
    assert.throws(() => parseManifest(body, 'text/html; charset=utf-8'),
      (e: unknown) => isWharfError(e, 'WHARF_MANIFEST_INVALID'));
  });

  test('Range headers', () => {
    assert.deepEqual(parseRange('bytes=0-9', 100), { start: 0, end: 10 });
    assert.deepEqual(parseRange('bytes=90-', 100), { start: 90, end: 100 });
    assert.deepEqual(parseRange('bytes=-5', 100), { start: 95, end: 100 });
    assert.deepEqual(parseRange('bytes=50-500', 100), { start: 50, end: 100 });
    assert.equal(parseRange('bytes=0-1,5-6', 100), undefined);
    assert.equal(parseRange('bytes=0-9', undefined), undefined);
    assert.throws(() => parseRange('bytes=100-', 100), (e: unknown) => isWharfError(e, 'WHARF_RANGE_INVALID'));
  });

  test('WWW-Authenticate challenges', () => {
    assert.deepEqual(
      parseChallenge('Bearer realm="https://auth.example.io/token",service="registry.example.io",scope="repository:a/b:pull,push"'),
      {
        scheme: 'bearer',
        params: { realm: 'https://auth.example.io/token', service: 'registry.example.io', scope: 'repository:a/b:pull,push' },
      },
    );
    assert.deepEqual(parseChallenge('Basic realm=registry'), { scheme: 'basic', params: { realm: 'registry' } });
    assert.equal(parseChallenge(undefined), undefined);
  });
});
