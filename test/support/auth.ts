import { delimiter } from 'node:path';
import { Writable } from 'node:stream';

import { createLogger, type Logger } from '../../src/log.js';
import type { Registry } from '../helpers/registry.js';

/** The name `wharf serve` gives an upstream at this registry's URL: HOST_PORT. */
export function upstreamName(reg: Registry): string {
  return reg.host.replace(':', '_');
}

/** A debug logger whose lines are kept, so tests can check no credential is ever written. */
export function captureLogs(): { lines: string[]; logger: Logger } {
  const lines: string[] = [];
  const sink = new Writable({
    write(chunk: Buffer, _enc, done) {
      lines.push(chunk.toString('utf8'));
      done();
    },
  });
  return { lines, logger: createLogger({ level: 'debug', destination: sink }) };
}

/**
 * Runs `fn` with DOCKER_CONFIG at `dir` (and `dir` first on PATH when `path` is set, for
 * credential helpers placed there), restoring both afterwards.
 */
export async function withDockerConfig<T>(dir: string, fn: () => Promise<T>, path = false) {
  const saved = { config: process.env.DOCKER_CONFIG, path: process.env.PATH };
  process.env.DOCKER_CONFIG = dir;
  if (path) process.env.PATH = `${dir}${delimiter}${saved.path ?? ''}`;
  try {
    return await fn();
  } finally {
    if (saved.config === undefined) delete process.env.DOCKER_CONFIG;
    else process.env.DOCKER_CONFIG = saved.config;
    process.env.PATH = saved.path;
  }
}
