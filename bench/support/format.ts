/** Human-readable figures for the report; the JSON keeps the raw numbers. */

export const KiB = 1024;
export const MiB = 1024 * KiB;
export const GiB = 1024 * MiB;

export function bytes(n: number): string {
  if (n >= GiB) return `${(n / GiB).toFixed(2)} GiB`;
  if (n >= MiB) return `${(n / MiB).toFixed(1)} MiB`;
  if (n >= KiB) return `${(n / KiB).toFixed(1)} KiB`;
  return `${n} B`;
}

/** A size as a short label for tags and titles: 256m, 1g. */
export function sizeLabel(n: number): string {
  return n >= GiB && n % GiB === 0 ? `${n / GiB}g` : `${Math.round(n / MiB)}m`;
}

export function ms(n: number): string {
  if (n >= 10_000) return `${(n / 1000).toFixed(1)} s`;
  if (n >= 1000) return `${(n / 1000).toFixed(2)} s`;
  if (n >= 10) return `${n.toFixed(1)} ms`;
  return `${n.toFixed(2)} ms`;
}

export function rate(bytesPerSecond: number): string {
  return `${bytes(bytesPerSecond)}/s`;
}

/** A multiple, e.g. 1.04x; NaN (nothing to compare) prints as a dash. */
export function times(n: number): string {
  if (!Number.isFinite(n)) return '-';
  return n >= 100 ? `${n.toFixed(0)}x` : `${n.toFixed(2)}x`;
}
