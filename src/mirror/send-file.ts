import { open, type FileHandle } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { WharfError } from '../errors.js';
import { blobBuffers } from '../util/buffer-pool.js';
import { drained } from '../util/drained.js';

export interface OpenFile {
  handle: FileHandle;
  size: number;
}

/**
 * Opens a stored file and takes its size from the open handle, undefined when it is gone.
 * Opened before any header goes out, never stat then open: `wharf cache gc` in another process
 * may unlink the file at any time, and an open handle keeps its data readable (POSIX unlink),
 * whereas a file unlinked between a stat and an open would leave a response promised in full
 * with nothing to send.
 */
export async function openFile(path: string): Promise<OpenFile | undefined> {
  let handle: FileHandle;
  try {
    handle = await open(path, 'r');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT' || code === 'ENOTDIR') return undefined;
    throw err;
  }
  try {
    return { handle, size: (await handle.stat()).size };
  } catch (err) {
    await handle.close();
    throw err;
  }
}

/**
 * Writes bytes `[start, end)` of an open file to a client and returns how many went out; the
 * caller closes the file. Each read fills a pooled buffer that goes back to the pool when the
 * socket has written it, so a long transfer allocates nothing. Stops early when the client
 * goes away.
 */
export async function sendFile(
  out: Writable,
  file: FileHandle,
  start: number,
  end: number,
  name: string,
): Promise<number> {
  let pos = start;
  while (pos < end && !out.destroyed) {
    const buf = blobBuffers.take();
    const { bytesRead } = await file.read(buf, 0, Math.min(buf.length, end - pos), pos);
    if (bytesRead === 0) {
      blobBuffers.give(buf);
      throw new WharfError('WHARF_INTERNAL', `${name} ended at ${pos} bytes, before ${end}`);
    }
    pos += bytesRead;
    const chunk = bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    if (!out.write(chunk, () => blobBuffers.give(buf))) await drained(out);
  }
  return pos - start;
}
