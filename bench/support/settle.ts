import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Flushes dirty pages to disk before a measurement. A phase that wrote gigabytes leaves the
 * kernel writing them back for seconds after; any fsync in the next phase (the blob store's
 * commit, SQLite's checkpoint) would wait behind that and charge it to the wrong system.
 */
export async function settleDisk(): Promise<void> {
  await run('sync').catch(() => undefined);
}
