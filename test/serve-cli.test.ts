import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, chown, mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { after, describe, test } from 'node:test';
import { promisify } from 'node:util';
import { silentLogger } from '../src/log.js';
import { loadMirrorConfig } from '../src/mirror/config.js';
import { BlobStore } from '../src/store/blob-store.js';
import { openIndex } from '../src/store/recovery.js';
import { cleanupAll, makeTempDir } from './helpers/tmp.js';

after(cleanupAll);

const execFileP = promisify(execFile);
const MAIN = fileURLToPath(new URL('../src/cli/main.ts', import.meta.url));
/** `nobody`: a user that owns none of the files the tests make as root. */
const NOBODY = 65534;

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/**
 * Runs `wharf ARGS` to its end. A `serve` that gets as far as listening would run on, so it
 * is killed after a while: a refused start must exit long before that.
 */
async function wharf(args: string[], options: { uid?: number } = {}): Promise<Run> {
  const ids = options.uid === undefined ? {} : { uid: options.uid, gid: options.uid };
  try {
    const argv = ['--import', 'tsx', MAIN, ...args];
    const { stdout, stderr } = await execFileP(process.execPath, argv, { timeout: 20_000, ...ids });
    return { code: 0, stdout, stderr };
  } catch (err) {
    const e = err as { code: number | null; stdout: string; stderr: string };
    return { code: typeof e.code === 'number' ? e.code : null, stdout: e.stdout, stderr: e.stderr };
  }
}

/** `wharf serve` on a port of its own choosing, with the given extra arguments. */
function serve(args: string[], options: { uid?: number } = {}): Promise<Run> {
  return wharf(['serve', '--listen', '127.0.0.1:0', ...args], options);
}

async function configFile(text: string): Promise<string> {
  const path = join(await makeTempDir('serve-config'), 'mirror.yaml');
  await writeFile(path, text);
  return path;
}

/** A data folder a mirror has used, made by root as a first run would; readable by all. */
async function usedDataFolder(): Promise<string> {
  const dir = await makeTempDir('serve-data');
  await chmod(dir, 0o755);
  const data = join(dir, 'data');
  await mkdir(data);
  const index = await openIndex(data, silentLogger());
  await new BlobStore(data).init();
  index.close();
  return data;
}

function assertConfigError(run: Run, message: RegExp): void {
  assert.equal(run.code, 2, run.stderr);
  assert.match(run.stderr, /\[WHARF_CONFIG_INVALID\]/);
  assert.match(run.stderr, message);
  assert.match(run.stderr, /^hint: /m);
}

describe('wharf serve refuses a bad start with a config error', () => {
  test('an unknown log level is refused, naming the option and listing the levels', async () => {
    const levels = /hint: use one of trace, debug, info, warn, error, fatal, silent/;
    const flag = await serve(['--log-level', 'loud']);
    assertConfigError(flag, /--log-level: unknown log level "loud"/);
    assert.match(flag.stderr, levels);

    const path = await configFile('logLevel: loud\n');
    const file = await serve(['--config', path]);
    assertConfigError(file, new RegExp(`${path}: logLevel: unknown log level "loud"`));
    assert.match(file.stderr, levels);
  });

  test('the levels --help lists are the ones the flag and the file accept', async () => {
    const help = await wharf(['serve', '--help']);
    const line = /--log-level <level>\s+(.+)\(default/s.exec(help.stdout)?.[1] ?? '';
    const listed = line.split(/[\s,]+/).filter(Boolean);
    assert.deepEqual(listed, ['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']);
    for (const level of listed) {
      assert.equal((await loadMirrorConfig({ logLevel: level })).logLevel, level);
      const path = await configFile(`logLevel: ${level}\n`);
      assert.equal((await loadMirrorConfig({ config: path })).logLevel, level);
    }
  });
});

describe('wharf serve names the option a bad value came from', () => {
  test('a data path that is a file is refused as not a folder', async () => {
    const file = join(await makeTempDir('serve-data'), 'afile');
    await writeFile(file, '');
    const run = await serve(['--data', file]);
    assertConfigError(run, new RegExp(`--data: ${file} is not a folder`));
    assertConfigError(await serve(['--data', join(file, 'sub')]), /--data: .* is not a folder/);

    const path = await configFile(`data: ${file}\n`);
    const inFile = await serve(['--config', path]);
    assertConfigError(inFile, new RegExp(`${path}: data: .* is not a folder`));
  });

  test('an --upstream that is not a URL is named as the user gave it', async () => {
    const run = await serve(['--upstream', 'notaurl']);
    assertConfigError(run, /error: --upstream notaurl: not a URL \[/);
  });

  test('an --upstream NAME not allowed is named as the problem, with the rule', async () => {
    const run = await serve(['--upstream', 'a/b=http://127.0.0.1:1']);
    assertConfigError(run, /--upstream a\/b=http:\/\/127\.0\.0\.1:1: invalid upstream name "a\/b"/);
    assert.match(run.stderr, /lowercase letters and digits, joined by single dots, dashes/);
  });

  test('a bad duration in the file names the file', async () => {
    const path = await configFile('tagTtl: soon\n');
    const run = await serve(['--config', path]);
    assertConfigError(run, new RegExp(`${path}: tagTtl: invalid duration`));
  });

  test('an upstream with both password and passwordEnv is told to use one of them', async () => {
    const path = await configFile([
      'upstreams:',
      '  - url: https://registry.example.io',
      '    username: ci',
      '    password: s3cret-in-file',
      '    passwordEnv: NOPE_ENV',
      '',
    ].join('\n'));
    const run = await serve(['--config', path]);
    assertConfigError(run, /upstreams\.0\.passwordEnv: password and passwordEnv are both set/);
    assert.match(run.stderr, /hint: use one of them/);
    assert.doesNotMatch(run.stderr, /s3cret-in-file/);
  });
});

describe('wharf serve on a data folder it cannot write', () => {
  // The child runs as another user; only root can start it so.
  const asNobody = { uid: NOBODY };

  test('a used folder owned by another user is refused before listening', async () => {
    assert.equal(process.getuid?.(), 0, 'this test runs wharf as uid 65534, which needs root');
    const data = await usedDataFolder();
    const run = await serve(['--data', data], asNobody);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, /\[WHARF_STATE_UNWRITABLE\]/);
    assert.match(run.stderr, new RegExp(`hint: make ${data} and everything in it readable`));
    assert.doesNotMatch(run.stderr, /mirror listening/);
  });

  test('a blob folder owned by another user is refused before listening', async () => {
    assert.equal(process.getuid?.(), 0, 'this test runs wharf as uid 65534, which needs root');
    const data = await usedDataFolder();
    // The index is the user's, the blob folder is not: a partial chown.
    for (const name of [data, join(data, 'index.db')]) await chown(name, NOBODY, NOBODY);
    const run = await serve(['--data', data], asNobody);
    assert.equal(run.code, 1, run.stderr);
    assert.match(run.stderr, new RegExp(`cannot write to ${join(data, 'blobs')}: EACCES`));
    assert.match(run.stderr, /\[WHARF_STATE_UNWRITABLE\]/);
    assert.doesNotMatch(run.stderr, /mirror listening/);
  });
});

describe('wharf help', () => {
  test('help with a command and its subcommand shows the subcommand', async () => {
    const run = await wharf(['help', 'cache', 'ls']);
    assert.equal(run.code, 0, run.stderr);
    assert.match(run.stdout, /^Usage: wharf cache ls /);
  });
});
