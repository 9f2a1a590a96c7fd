import { createCipheriv, createHash, randomBytes, type Hash } from 'node:crypto';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { pipeline } from 'node:stream/promises';
import { createGzip } from 'node:zlib';

import { blobPath, tempBlobPath } from './layout.js';

export interface RandomLayerOptions {
  /** Bytes of random content in the layer's single file. */
  contentSize: number;
  /** Path of that file inside the tar. */
  fileName: string;
  /** gzip at this level (1 is fast and what tests want); undefined writes a plain tar. */
  gzipLevel?: number;
}

export interface WrittenLayer {
  digest: string;
  size: number;
  /** sha256 of the uncompressed tar: the config's rootfs.diff_ids entry. */
  diffId: string;
}

const CHUNK = 1024 * 1024;
const BLOCK = 512;
const ZEROS = Buffer.alloc(CHUNK);

/**
 * Streams a tar with one file of random bytes into the layout's blobs folder.
 * Nothing is held in memory beyond a chunk, so gigabyte layers are fine; the
 * random bytes come from AES-CTR over zeros, which is several times faster than
 * crypto.randomBytes and just as incompressible.
 */
export async function writeRandomLayer(
  dir: string,
  options: RandomLayerOptions,
): Promise<WrittenLayer> {
  const diffHash = createHash('sha256');
  const blobHash = createHash('sha256');
  let size = 0;
  const tmp = tempBlobPath(dir);

  const tar = tarStream(options.contentSize, options.fileName, diffHash);
  const count = async function* (source: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
    for await (const chunk of source) {
      blobHash.update(chunk);
      size += chunk.length;
      yield chunk;
    }
  };
  const out = createWriteStream(tmp);
  try {
    if (options.gzipLevel === undefined) {
      await pipeline(tar, count, out);
    } else {
      const gzip = createGzip({ level: options.gzipLevel, chunkSize: 256 * 1024 });
      await pipeline(tar, gzip, count, out);
    }
  } catch (err) {
    await rm(tmp, { force: true });
    throw err;
  }

  const digest = `sha256:${blobHash.digest('hex')}`;
  await rename(tmp, blobPath(dir, digest));
  return { digest, size, diffId: `sha256:${diffHash.digest('hex')}` };
}

async function* tarStream(contentSize: number, fileName: string, hash: Hash) {
  const emit = (chunk: Buffer) => {
    hash.update(chunk);
    return chunk;
  };
  yield emit(tarHeader(fileName, contentSize));

  const cipher = createCipheriv('aes-128-ctr', randomBytes(16), randomBytes(16));
  for (let left = contentSize; left > 0; left -= CHUNK) {
    const n = Math.min(left, CHUNK);
    yield emit(cipher.update(n === CHUNK ? ZEROS : ZEROS.subarray(0, n)));
  }

  // Pad the file to a whole block, then the two zero blocks that end an archive.
  const pad = (BLOCK - (contentSize % BLOCK)) % BLOCK;
  yield emit(Buffer.alloc(pad + 2 * BLOCK));
}

/** A ustar header for a regular file owned by root, mode 0644, mtime 0. */
function tarHeader(name: string, size: number): Buffer {
  if (Buffer.byteLength(name) > 100) throw new Error(`tar name too long: ${name}`);
  // 11 octal digits hold sizes up to 8 GiB - 1, the ustar limit.
  if (size >= 8 ** 11) throw new Error(`tar entry too large: ${size}`);
  const h = Buffer.alloc(BLOCK);
  h.write(name, 0, 100, 'utf8');
  h.write('0000644\0', 100);
  h.write('0000000\0', 108);
  h.write('0000000\0', 116);
  h.write(`${size.toString(8).padStart(11, '0')}\0`, 124);
  h.write('00000000000\0', 136);
  h.write('        ', 148); // checksum field counts as spaces while summing
  h.write('0', 156);
  h.write('ustar\0', 257);
  h.write('00', 263);
  h.write('root', 265);
  h.write('root', 297);
  let sum = 0;
  for (const byte of h) sum += byte;
  h.write(`${sum.toString(8).padStart(6, '0')}\0 `, 148);
  return h;
}
