import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import { collect } from './options.js';
import { WharfError } from '../errors.js';
import { silentLogger } from '../log.js';
import { freeDisk } from '../mirror/cache.js';
import { DEFAULTS, readConfigFile, type UpstreamConfig } from '../mirror/config.js';
import { pinPlatform } from '../mirror/pinner.js';
import { Router } from '../mirror/routing.js';
import { parseImageRef, parseNamedImageRef } from '../oci/reference.js';
import { BlobStore } from '../store/blob-store.js';
import { evict } from '../store/eviction.js';
import type { IndexDb } from '../store/index-db.js';
import { listPins, listTags, usage } from '../store/inventory.js';
import { INDEX_FILE, openIndex, quarantine, verifyFile } from '../store/recovery.js';
import { formatBytes, parseSize } from '../util/units.js';
import { formatTable } from './table.js';

interface DataFlags {
  data?: string;
  config?: string;
  json?: boolean;
}

async function dataDir(flags: DataFlags): Promise<string> {
  const file = flags.config ? await readConfigFile(flags.config) : {};
  const dir = resolve(flags.data ?? file.data ?? DEFAULTS.data);
  if (!existsSync(join(dir, INDEX_FILE)) && !existsSync(join(dir, 'blobs'))) {
    throw new WharfError('WHARF_BAD_USAGE', `${dir} is not a wharf data folder`, {
      hint: 'point --data (or --config) at the folder `wharf serve` uses',
    });
  }
  return dir;
}

/**
 * Opens the store of a data folder; SQLite's WAL lets this run beside a serving mirror. A
 * corrupt index is reported, never rebuilt here: moving it aside under a running mirror would
 * lose what the mirror writes.
 */
async function withStore<T>(flags: DataFlags, fn: (index: IndexDb, store: BlobStore) => Promise<T>) {
  const dir = await dataDir(flags);
  const index = await openIndex(dir, silentLogger(), { rebuild: false });
  try {
    return await fn(index, new BlobStore(dir));
  } finally {
    index.close();
  }
}

/**
 * Checks an image as pins name it, by registry host or by an upstream NAME, when there are no
 * upstreams to check it against.
 */
function checkPinSyntax(image: string): void {
  const slash = image.indexOf('/');
  const first = image.slice(0, Math.max(0, slash));
  try {
    parseImageRef(image);
  } catch (err) {
    // Not a registry host: perhaps an upstream NAME (`127.0.0.1_5001`, `corp`).
    if (!/^[A-Za-z0-9][A-Za-z0-9._-]*$/.test(first)) throw err;
    parseNamedImageRef(image, first);
  }
}

const plural = (n: number, noun: string) => `${n} ${noun}${n === 1 ? '' : 's'}`;

/** Throws unless the mirror would fetch `image` from one of its upstreams. */
function checkRoutable(image: string, upstreams: UpstreamConfig[]): void {
  try {
    new Router(upstreams).forImage(image);
  } catch (err) {
    if (!(err instanceof WharfError) || err.code !== 'WHARF_UPSTREAM_UNKNOWN') throw err;
    const names = upstreams.map((u) => `${u.name} (${u.url})`).join(', ');
    throw new WharfError('WHARF_UPSTREAM_UNKNOWN', `${err.message}, so it cannot be pinned`, {
      hint: `name it by its registry or an upstream NAME of the mirror: ${names}`,
    });
  }
}

const when = (ms: number) => (ms ? new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z') : '-');
const out = (text: string): void => {
  process.stdout.write(text);
};
/** What `--json` prints: the same value the table shows, indented. */
const outJson = (value: unknown): void => out(JSON.stringify(value, null, 2) + '\n');

function dataOptions(cmd: Command): Command {
  return cmd
    .option('-d, --data <dir>', `the mirror's data folder (default ${DEFAULTS.data})`)
    .option('-c, --config <file>', 'take the data folder (and budget) from this config file');
}

export function register(program: Command): void {
  const cache = program
    .command('cache')
    .description("inspect and manage a mirror's store (works while the mirror runs)");

  dataOptions(cache.command('ls').description('cached images by tag or digest: size, last use, pinned'))
    .option('--json', 'print JSON')
    .action(async (flags: DataFlags) => {
      const tags = await withStore(flags, async (index) => listTags(index));
      if (flags.json) return outJson(tags);
      out(formatTable(
        ['IMAGE', 'DIGEST', 'SIZE', 'LAST USE', 'PINNED'],
        tags.map((t) => [t.image, t.digest, formatBytes(t.size), when(t.lastUse), t.pinned ? 'yes' : '']),
      ));
    });

  dataOptions(cache.command('du').description('disk use of the store, by repository'))
    .option('--json', 'print JSON')
    .action(async (flags: DataFlags) => {
      const result = await withStore(flags, async (index, store) => ({
        ...usage(index),
        freeDiskBytes: await freeDisk(store.root),
      }));
      if (flags.json) return outJson(result);
      out(`${formatBytes(result.totalBytes)} in ${result.blobs} blobs and ${result.manifests} manifests; ` +
        `${formatBytes(result.pinnedBytes)} pinned; ${formatBytes(result.freeDiskBytes)} free on disk\n`);
      out(formatTable(
        ['REPOSITORY', 'SIZE', 'BLOBS', 'MANIFESTS'],
        result.byRepository.map((r) => [
          r.repository, formatBytes(r.bytes), String(r.blobs), String(r.manifests),
        ]),
      ));
    });

  dataOptions(cache.command('pin').argument('<image>', 'image by tag or digest, e.g. registry.example.io/ci/build:v1'))
    .description('keep an image in the store whatever the budget; the mirror fetches it and follows its tag')
    .option('-p, --platform <os/arch>', 'keep only this platform of an index; repeatable', collect)
    .action(async (image: string, flags: DataFlags & { platform?: string[] }) => {
      const platforms = flags.platform?.map((p) => pinPlatform(p, '--platform'));
      const checked = await withStore(flags, async (index) => {
        const upstreams = index.recordedUpstreams();
        // Refused here rather than failing, unseen, at every refresh in the mirror's log.
        if (upstreams.length) checkRoutable(image, upstreams);
        else checkPinSyntax(image);
        index.addPin(image, platforms, 'cli');
        return upstreams.length > 0;
      });
      out(`pinned ${image}; a running mirror fetches it within its tagTtl\n`);
      if (!checked) {
        out('not checked against upstreams: no mirror has started on this data folder yet\n');
      }
    });

  dataOptions(cache.command('unpin').argument('<image>', 'an image given to `wharf cache pin`'))
    .description('stop keeping an image; its blobs become evictable')
    .action(async (image: string, flags: DataFlags) => {
      const removed = await withStore(flags, async (index) => index.removePin(image));
      if (!removed) {
        throw new WharfError('WHARF_BAD_USAGE', `${image} is not pinned`, {
          hint: 'see the pins, as they were written, with `wharf cache pins`',
        });
      }
      out(`unpinned ${image}\n`);
    });

  dataOptions(cache.command('pins').description('pinned images, their platforms and what each holds now'))
    .option('--json', 'print JSON')
    .action(async (flags: DataFlags) => {
      const pins = await withStore(flags, async (index) => listPins(index));
      if (flags.json) return outJson(pins);
      out(formatTable(
        ['IMAGE', 'PLATFORMS', 'FROM', 'HOLDS'],
        pins.map((p) => [
          p.image, p.platforms?.join(', ') ?? 'all', p.origin,
          p.blobs ? `${formatBytes(p.bytes)} in ${plural(p.blobs, 'blob')}` : 'nothing yet',
        ]),
      ));
    });

  dataOptions(cache.command('verify').description('rehash every blob; quarantine and name corrupt ones'))
    .option('--json', 'print JSON')
    .action(async (flags: DataFlags) => {
      const report = await withStore(flags, (index, store) => verifyAll(index, store));
      if (flags.json) outJson(report);
      else {
        for (const c of report.corrupt) out(`corrupt: ${c.digest} moved to ${c.movedTo}\n`);
        for (const d of report.missing) out(`missing: ${d} (dropped from the index)\n`);
        out(`verified ${report.checked} blobs: ${report.corrupt.length} corrupt, ${report.missing.length} missing\n`);
      }
      if (report.corrupt.length || report.missing.length) process.exitCode = 1;
    });

  dataOptions(cache.command('gc').description('evict least recently used blobs down to the budget now'))
    .option('--max-size <size>', 'the budget, e.g. 200GB (default: cache.maxSize of --config)')
    .action(async (flags: DataFlags & { maxSize?: string }) => {
      const file = flags.config ? await readConfigFile(flags.config) : {};
      const budget = flags.maxSize ?? file.cache?.maxSize;
      if (budget === undefined) {
        throw new WharfError('WHARF_BAD_USAGE', 'no budget to collect down to', {
          hint: 'give --max-size, or --config with cache.maxSize',
        });
      }
      const max = parseSize(budget, '--max-size');
      let left = { total: 0, pinned: 0 };
      const result = await withStore(flags, async (index, store) => {
        const over = index.totalSize() - max;
        const evicted = await evict(index, store, { bytes: Math.max(0, over) });
        left = { total: index.totalSize(), pinned: index.pinnedBytes() };
        return evicted;
      });
      out(`evicted ${plural(result.count, 'blob')}, ${formatBytes(result.bytes)}\n`);
      if (left.total > max) {
        out(`still ${formatBytes(left.total)} stored, over the budget: ${formatBytes(left.pinned)} ` +
          'of it is pinned (see `wharf cache pins`), and manifests stay while their images are stored\n');
      }
    });

  cache.addHelpText('after', `
Examples:
  wharf cache ls --data /var/lib/wharf
  wharf cache du --json
  wharf cache pin mcr.microsoft.com/windows/servercore:ltsc2022 --platform windows/amd64
  wharf cache unpin mcr.microsoft.com/windows/servercore:ltsc2022
  wharf cache pins
  wharf cache verify
  wharf cache gc --max-size 200GB`);
}


export interface VerifyReport {
  checked: number;
  corrupt: { digest: string; movedTo: string }[];
  missing: string[];
}

/**
 * Rehashes every blob of the index. It works from a snapshot of the rows while a running
 * mirror may evict: the mirror deletes a row before its file, so a file gone whose row is
 * gone too was evicted, not lost, and is neither reported nor quarantined.
 */
export async function verifyAll(index: IndexDb, store: BlobStore): Promise<VerifyReport> {
  const report: VerifyReport = { checked: 0, corrupt: [], missing: [] };
  for (const row of index.allBlobs()) {
    const size = await store.size(row.digest);
    if (size === undefined) {
      if (!index.getBlob(row.digest)) continue;
      report.checked++;
      index.deleteBlob(row.digest);
      report.missing.push(row.digest);
      continue;
    }
    if (size === row.size && (await verifyFile(store.path(row.digest), row.digest))) {
      report.checked++;
      continue;
    }
    // A file evicted while it was hashed reads short or not at all: not corruption.
    if (!index.getBlob(row.digest)) continue;
    report.checked++;
    // Out of the index first, so a running mirror stops serving it, then out of the store.
    index.deleteBlob(row.digest);
    const movedTo = await quarantine(store, row.digest);
    if (movedTo !== undefined) report.corrupt.push({ digest: row.digest, movedTo });
  }
  return report;
}
