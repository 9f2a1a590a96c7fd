import { createHash, type Hash } from 'node:crypto';
import { WharfError } from '../errors.js';

/** The digest algorithms wharf can verify, with the length of their hex encoding. */
const ALGORITHMS = { sha256: 64, sha512: 128 } as const;
export type Algorithm = keyof typeof ALGORITHMS;

const DIGEST_SHAPE = /^([a-z0-9]+(?:[+._-][a-z0-9]+)*):([a-zA-Z0-9=_-]+)$/;

export interface Digest {
  algorithm: Algorithm;
  hex: string;
  /** `algorithm:hex`, the form used on the wire. */
  value: string;
}

/**
 * Checks a digest against the image spec's grammar and the registered algorithms. Only a value
 * that passes is ever used to build a path or a URL.
 */
export function parseDigest(input: string): Digest {
  const match = DIGEST_SHAPE.exec(input);
  const algorithm = match?.[1];
  const hex = match?.[2];
  if (!algorithm || !hex) {
    throw new WharfError('WHARF_DIGEST_INVALID', `invalid digest ${JSON.stringify(input)}`, {
      hint: 'a digest looks like sha256: followed by 64 lowercase hex digits',
    });
  }
  if (!(algorithm in ALGORITHMS)) {
    throw new WharfError('WHARF_DIGEST_INVALID', `unsupported digest algorithm ${algorithm}`, {
      hint: 'use a sha256 or sha512 digest',
    });
  }
  const alg = algorithm as Algorithm;
  if (hex.length !== ALGORITHMS[alg] || !/^[a-f0-9]+$/.test(hex)) {
    throw new WharfError('WHARF_DIGEST_INVALID', `invalid ${alg} digest ${JSON.stringify(input)}`, {
      hint: `a ${alg} digest has ${ALGORITHMS[alg]} lowercase hex digits`,
    });
  }
  return { algorithm: alg, hex, value: input };
}

export function isDigest(input: string): boolean {
  try {
    parseDigest(input);
    return true;
  } catch {
    return false;
  }
}

export function hasher(digest: Digest): Hash {
  return createHash(digest.algorithm);
}

export function digestOf(data: Uint8Array, algorithm: Algorithm = 'sha256'): string {
  return `${algorithm}:${createHash(algorithm).update(data).digest('hex')}`;
}
