import { WharfError } from '../errors.js';

const SIZE_UNITS: Record<string, number> = {
  '': 1, b: 1,
  k: 1e3, kb: 1e3, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  ki: 2 ** 10, kib: 2 ** 10, mi: 2 ** 20, mib: 2 ** 20, gi: 2 ** 30, gib: 2 ** 30,
  ti: 2 ** 40, tib: 2 ** 40,
};

const DURATION_UNITS: Record<string, number> = {
  ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000,
};

/** Parses `512MB`, `10GiB`, `1.5g` or a plain number of bytes. */
export function parseSize(input: string | number, option: string): number {
  if (typeof input === 'number' && Number.isFinite(input) && input >= 0) return Math.floor(input);
  const m = /^\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*$/.exec(String(input));
  const factor = m ? SIZE_UNITS[m[2]!.toLowerCase()] : undefined;
  if (!m || factor === undefined) {
    throw new WharfError('WHARF_CONFIG_INVALID', `${option}: invalid size ${JSON.stringify(input)}`, {
      hint: 'write a size as a number with an optional unit: 500MB, 20GB, 1TiB',
    });
  }
  return Math.floor(Number(m[1]) * factor);
}

/** Parses `60s`, `5m`, `1h30m`, `250ms` or a plain number of seconds. */
export function parseDuration(input: string | number, option: string): number {
  if (typeof input === 'number' && Number.isFinite(input) && input >= 0) return input * 1000;
  const text = String(input).trim();
  const parts = [...text.matchAll(/([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d)/g)];
  const joined = parts.map((p) => p[0]).join('');
  if (/^[0-9]+(?:\.[0-9]+)?$/.test(text)) return Number(text) * 1000;
  if (parts.length === 0 || joined !== text) {
    throw new WharfError('WHARF_CONFIG_INVALID', `${option}: invalid duration ${JSON.stringify(input)}`, {
      hint: 'write a duration as a number with a unit: 500ms, 60s, 5m, 1h30m',
    });
  }
  return parts.reduce((sum, p) => sum + Number(p[1]) * DURATION_UNITS[p[2]!]!, 0);
}

export function formatBytes(bytes: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let value = bytes;
  let i = 0;
  while (value >= 1000 && i < units.length - 1) {
    value /= 1000;
    i++;
  }
  return `${value.toFixed(i === 0 ? 0 : 1)} ${units[i]}`;
}
