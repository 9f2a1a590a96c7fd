import { mkdir, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';

import type { Environment } from './environment.js';

/** A table of the report: what one benchmark measured, already formatted for people. */
export interface Section {
  title: string;
  header: string[];
  rows: string[][];
  /** Lines printed under the table: what the figures mean, how they were taken. */
  notes?: string[];
}

/** A target from the issue that asked for the benchmark, and whether this run met it. */
export interface Check {
  what: string;
  /** The measured figure, e.g. a ratio. */
  value: number;
  /** The target it is held to. */
  limit: number;
  /** `max`: the value must not exceed the limit; `min`: it must reach it. */
  kind: 'max' | 'min';
  pass: boolean;
}

/** What a benchmark hands back: tables for stdout, checks, and raw figures for the JSON. */
export interface BenchResult {
  name: string;
  seconds: number;
  sections: Section[];
  checks: Check[];
  /** Raw measurements, unformatted, for `.bench/results.json`. */
  data: unknown;
}

export function check(what: string, value: number, kind: Check['kind'], limit: number): Check {
  const pass = kind === 'max' ? value <= limit : value >= limit;
  return { what, value, limit, kind, pass };
}

/** Pads each column to its widest cell; numbers read best right-aligned, labels left. */
export function formatTable(header: string[], rows: string[][]): string {
  const all = [header, ...rows];
  const widths = header.map((_, i) => Math.max(...all.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]) =>
    cells
      .map((cell, i) => (i === 0 ? cell.padEnd(widths[i]!) : cell.padStart(widths[i]!)))
      .join('  ')
      .trimEnd();
  const rule = widths.map((w) => '-'.repeat(w)).join('  ');
  return [line(header), rule, ...rows.map(line)].join('\n');
}

export function formatResult(result: BenchResult): string {
  const out: string[] = [`== ${result.name} (${result.seconds.toFixed(0)} s)`];
  for (const section of result.sections) {
    out.push('', section.title, formatTable(section.header, section.rows));
    for (const note of section.notes ?? []) out.push(`  ${note}`);
  }
  if (result.checks.length > 0) {
    out.push('', 'targets');
    for (const c of result.checks) {
      const sign = c.kind === 'max' ? '<=' : '>=';
      const verdict = c.pass ? 'PASS' : 'FAIL';
      out.push(`  ${verdict}  ${c.what}: ${fixed(c.value)} (target ${sign} ${fixed(c.limit)})`);
    }
  }
  return out.join('\n');
}

export function formatEnvironment(env: Environment): string {
  const lines = [
    `node ${env.node} on ${env.platform}/${env.arch}, ${env.cpus} cores (${env.cpuModel}), ` +
      `${(env.memoryBytes / 2 ** 30).toFixed(1)} GiB RAM, load ${env.loadAverage.join(' ')}`,
    `wharf ${env.wharfVersion}, ${env.registryVersion}, ${env.quick ? 'quick' : 'full'} sizes`,
  ];
  if ((env.loadAverage[0] ?? 0) >= env.cpus) lines.push(busyWarning(env.loadAverage));
  return lines.join('\n');
}

/** Said when the machine was busy with other work: absolute figures then mean little. */
export function busyWarning(load: number[]): string {
  return `note: load ${load[0]} on this machine from other work; ` +
    'trust the ratios over the absolute figures, and repeat a run before concluding';
}

export interface RunRecord {
  startedAt: string;
  finishedAt: string;
  environment: Environment;
  /** 1, 5 and 15 minute load when the run ended. */
  loadAverageEnd: number[];
  results: Record<string, unknown>;
  /** Benchmarks that threw, with their message: the others still ran. */
  failures: Record<string, string>;
}

export async function writeJson(path: string, record: RunRecord): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  await writeFile(path, JSON.stringify(record, null, 2) + '\n');
}

function fixed(n: number): string {
  return Number.isInteger(n) ? String(n) : n.toFixed(2);
}
