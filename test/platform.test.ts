import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { isWharfError } from '../src/errors.js';
import { parseManifest, type ImageIndex } from '../src/oci/manifest.js';
import {
  choosePlatform,
  formatPlatform,
  parsePlatform,
  platformOf,
  windowsBuildOfEngine,
  type PlatformSpec,
} from '../src/oci/platform.js';

const fake = (seed: string) => `sha256:${createHash('sha256').update(seed).digest('hex')}`;
const LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';
const MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';

/**
 * A manifest list shaped like those of Microsoft's Windows base and SDK images: one entry per
 * Windows build, several revisions of a build when a tag spans a patch day, the same
 * architecture throughout, and no Linux entry.
 */
const windowsList = Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: LIST,
  manifests: [
    ['10.0.17763.5329', 2141], ['10.0.20348.2159', 2142], ['10.0.20348.2227', 2143],
    ['10.0.26100.1742', 2144],
  ].map(([version, size]) => ({
    mediaType: MANIFEST,
    size,
    digest: fake(`win-${version}`),
    platform: { architecture: 'amd64', os: 'windows', 'os.version': version },
  })),
}));

/** A manifest list with one Windows entry per os.version (undefined: none given). */
function listOf(versions: (string | undefined)[]): Buffer {
  return Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: LIST,
    manifests: versions.map((version, i) => ({
      mediaType: MANIFEST,
      size: 2000 + i,
      digest: fake(`list-${version}-${i}`),
      platform: version
        ? { architecture: 'amd64', os: 'windows', 'os.version': version }
        : { architecture: 'amd64', os: 'windows' },
    })),
  }));
}

/** An OCI index as BuildKit pushes it: two Linux platforms, an attestation, and Windows. */
const mixedIndex = Buffer.from(JSON.stringify({
  schemaVersion: 2,
  mediaType: 'application/vnd.oci.image.index.v1+json',
  manifests: [
    { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1021,
      digest: fake('linux-amd64'), platform: { architecture: 'amd64', os: 'linux' } },
    { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1021,
      digest: fake('linux-arm64'),
      platform: { architecture: 'arm64', os: 'linux', variant: 'v8' } },
    { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 566,
      digest: fake('attestation'), platform: { architecture: 'unknown', os: 'unknown' },
      annotations: {
        'vnd.docker.reference.digest': fake('linux-amd64'),
        'vnd.docker.reference.type': 'attestation-manifest',
      } },
    { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 1433,
      digest: fake('windows-ltsc2022'),
      platform: { architecture: 'amd64', os: 'windows', 'os.version': '10.0.20348.2340' } },
  ],
}));

function index(bytes: Buffer): ImageIndex {
  const parsed = parseManifest(bytes);
  assert.equal(parsed.kind, 'index');
  return parsed;
}

function chosenVersion(doc: Buffer, host: PlatformSpec, requested?: PlatformSpec): string {
  const entry = choosePlatform(index(doc), { host, requested });
  return platformOf(entry)!.osVersion ?? formatPlatform(platformOf(entry)!);
}

const windowsHost = (build: string): PlatformSpec =>
  ({ os: 'windows', architecture: 'amd64', osVersion: build });

describe('platform choice for Windows entries follows the host build', () => {
  test('a Server 2022 host takes the 20348 entry with the highest revision', () => {
    assert.equal(chosenVersion(windowsList, windowsHost('10.0.20348')), '10.0.20348.2227');
  });

  test('a Server 2019 host takes the 17763 entry', () => {
    assert.equal(chosenVersion(windowsList, windowsHost('10.0.17763')), '10.0.17763.5329');
  });

  test('a newer host without an entry of its own takes the newest 2022-or-later build', () => {
    // Windows 11 23H2 and Server 2025 run ltsc2022 images under process isolation.
    assert.equal(chosenVersion(windowsList, windowsHost('10.0.22631')), '10.0.20348.2227');
    const ltsc2022Only = listOf(['10.0.17763.5329', '10.0.20348.2227']);
    assert.equal(chosenVersion(ltsc2022Only, windowsHost('10.0.26100')), '10.0.20348.2227');
  });

  test('an older build is taken as the Docker daemon takes it, for Hyper-V isolation', () => {
    const old = listOf(['10.0.14393.6614', '10.0.17763.5329']);
    assert.equal(chosenVersion(old, windowsHost('10.0.20348')), '10.0.17763.5329');
  });

  test('an entry without os.version is taken when no build fits better', () => {
    const bare = listOf([undefined, '10.0.26100.1742']);
    assert.equal(chosenVersion(bare, windowsHost('10.0.20348')), 'windows/amd64');
    assert.equal(chosenVersion(bare, windowsHost('10.0.26100')), '10.0.26100.1742');
  });

  test('a host older than every entry gets an error naming the builds and --platform', () => {
    const newer = listOf(['10.0.20348.2227', '10.0.26100.1742']);
    assert.throws(() => chosenVersion(newer, windowsHost('10.0.17763')), (err) => {
      assert.ok(isWharfError(err, 'WHARF_PLATFORM_UNAVAILABLE'));
      assert.match(err.message, /10\.0\.17763/);
      assert.match(err.message, /newer than this host: 10\.0\.20348\.2227, 10\.0\.26100\.1742/);
      assert.match(err.hint ?? '', /--platform/);
      return true;
    });
  });

  test('--platform with a build overrides the host build', () => {
    const requested = parsePlatform('windows(10.0.17763)/amd64');
    assert.equal(chosenVersion(windowsList, windowsHost('10.0.20348'), requested),
      '10.0.17763.5329');
  });

  test('--platform with a full version picks exactly that revision', () => {
    const requested = parsePlatform('windows(10.0.20348.2159)/amd64');
    assert.equal(chosenVersion(windowsList, windowsHost('10.0.20348'), requested),
      '10.0.20348.2159');
  });

  test('a Windows entry is chosen from a mixed index, attestations aside', () => {
    assert.equal(chosenVersion(mixedIndex, windowsHost('10.0.20348')), '10.0.20348.2340');
  });
});

describe('platform choice for Linux entries matches os, architecture and variant', () => {
  const linux = (architecture: string, variant?: string): PlatformSpec =>
    variant ? { os: 'linux', architecture, variant } : { os: 'linux', architecture };

  test('an amd64 engine takes linux/amd64', () => {
    const entry = choosePlatform(index(mixedIndex), { host: linux('amd64') });
    assert.equal(entry.digest, fake('linux-amd64'));
  });

  test('an arm64 engine takes linux/arm64/v8, with or without the variant', () => {
    for (const host of [linux('arm64'), linux('arm64', 'v8')]) {
      const entry = choosePlatform(index(mixedIndex), { host });
      assert.equal(entry.digest, fake('linux-arm64'));
    }
  });

  test('a Linux engine asking a Windows-only list gets the platforms it has', () => {
    assert.throws(() => choosePlatform(index(windowsList), { host: linux('amd64') }), (err) => {
      assert.ok(isWharfError(err, 'WHARF_PLATFORM_UNAVAILABLE'));
      assert.match(err.message, /no linux\/amd64 entry/);
      assert.match(err.message, /windows\(10\.0\.17763\.5329\)\/amd64/);
      return true;
    });
  });
});

describe('platforms and host builds are read as users and engines write them', () => {
  test('--platform accepts os/arch/variant and os(version)/arch', () => {
    assert.deepEqual(parsePlatform('linux/arm64/v8'),
      { os: 'linux', architecture: 'arm64', variant: 'v8' });
    assert.deepEqual(parsePlatform('linux/x86_64'), { os: 'linux', architecture: 'amd64' });
    assert.deepEqual(parsePlatform('windows(10.0.20348)/amd64'),
      { os: 'windows', architecture: 'amd64', osVersion: '10.0.20348' });
  });

  test('a malformed --platform is bad usage naming the flag', () => {
    for (const text of ['linux', 'windows(10.0)/amd64', 'linux/amd64/v8/extra']) {
      assert.throws(() => parsePlatform(text), (err) => {
        assert.ok(isWharfError(err, 'WHARF_BAD_USAGE'));
        assert.match(err.message, /^--platform/);
        return true;
      });
    }
  });

  test('the host build comes from OSVersion, KernelVersion or the OS name', () => {
    assert.equal(windowsBuildOfEngine({ OSType: 'windows', OSVersion: '10.0.20348' }),
      '10.0.20348');
    assert.equal(windowsBuildOfEngine({
      KernelVersion: '10.0 17763 (17763.1.amd64fre.rs5_release.180914-1434)',
    }), '10.0.17763');
    assert.equal(windowsBuildOfEngine({
      OperatingSystem: 'Microsoft Windows Server Version 21H2 (OS Build 20348.2340)',
    }), '10.0.20348');
    assert.equal(windowsBuildOfEngine({ OSType: 'linux', KernelVersion: '6.1.0-18-amd64' }),
      undefined);
  });
});
