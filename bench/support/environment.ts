import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { arch, availableParallelism, cpus, loadavg, platform, totalmem } from 'node:os';
import { promisify } from 'node:util';

const run = promisify(execFile);

/** The machine a run measured on: ratios travel between machines, absolute figures do not. */
export interface Environment {
  node: string;
  platform: string;
  arch: string;
  cpus: number;
  cpuModel: string;
  memoryBytes: number;
  /** 1, 5 and 15 minute load when the run started: a busy machine explains a noisy run. */
  loadAverage: number[];
  wharfVersion: string;
  registryVersion: string;
  quick: boolean;
}

export async function describeEnvironment(quick: boolean): Promise<Environment> {
  return {
    node: process.version,
    platform: platform(),
    arch: arch(),
    cpus: availableParallelism(),
    cpuModel: cpus()[0]?.model.trim() ?? 'unknown',
    memoryBytes: totalmem(),
    loadAverage: loadavg().map((n) => Math.round(n * 100) / 100),
    wharfVersion: await wharfVersion(),
    registryVersion: await registryVersion(),
    quick,
  };
}

async function wharfVersion(): Promise<string> {
  const url = new URL('../../package.json', import.meta.url);
  const pkg = JSON.parse(await readFile(url, 'utf8')) as { version?: string };
  return pkg.version ?? 'unknown';
}

async function registryVersion(): Promise<string> {
  try {
    const { stdout } = await run('docker-registry', ['--version']);
    // "docker-registry github.com/docker/distribution 2.8.2+ds1" -> "distribution 2.8.2+ds1"
    const parts = stdout.trim().split(/\s+/);
    return `distribution ${parts[parts.length - 1] ?? '?'}`;
  } catch {
    return 'docker-registry not installed';
  }
}
