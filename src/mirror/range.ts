import { WharfError } from '../errors.js';

/** A byte range, `end` exclusive. */
export interface ByteRange {
  start: number;
  end: number;
}

/**
 * Parses a single-range `Range: bytes=...` header (RFC 9110). Multiple ranges, or a blob of
 * unknown size, get the whole blob (a server may ignore Range); an unsatisfiable one is a 416.
 */
export function parseRange(header: string | undefined, size: number | undefined): ByteRange | undefined {
  if (!header || size === undefined) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m) return undefined;
  const [, first, last] = m as unknown as [string, string, string];
  let start: number;
  let end: number;
  if (first === '') {
    if (last === '') return undefined;
    start = Math.max(0, size - Number(last));
    end = size;
  } else {
    start = Number(first);
    end = last === '' ? size : Math.min(size, Number(last) + 1);
  }
  if (start >= size || end <= start) {
    throw new WharfError('WHARF_RANGE_INVALID', `range ${header} is outside the blob of ${size} bytes`);
  }
  return { start, end };
}
