import { open } from 'node:fs/promises';
import type { Writable } from 'node:stream';
import { WharfError } from '../errors.js';
import { blobBuffers } from '../util/buffer-pool.js';
import { drained } from '../util/drained.js';

/**
 * Writes bytes `[start, end)` of a stored file to a client and returns how many went out.
 * Each read fills a pooled buffer that goes back to the pool when the socket has written it,
 * so a long transfer allocates nothing. Stops early when the client goes away.
 */
export async function sendFile(out: Writable, path: string, start: number, end: number): Promise<number> {
  const fd = await open(path, 'r');
  let pos = start;
  try {
    while (pos < end && !out.destroyed) {
      const buf = blobBuffers.take();
      const { bytesRead } = await fd.read(buf, 0, Math.min(buf.length, end - pos), pos);
      if (bytesRead === 0) {
        blobBuffers.give(buf);
        throw new WharfError('WHARF_INTERNAL', `${path} ended at ${pos} bytes, before ${end}`);
      }
      pos += bytesRead;
      const chunk = bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
      if (!out.write(chunk, () => blobBuffers.give(buf))) await drained(out);
    }
  } finally {
    await fd.close();
  }
  return pos - start;
}
