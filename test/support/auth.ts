import { delimiter } from 'node:path';
import { Writable } from 'node:stream';

import assert from 'node:assert/strict';

import { createLogger, type Logger } from '../../src/log.js';
import type { BuiltImage } from '../helpers/images.js';
import type { Registry } from '../helpers/registry.js';
import { get } from './mirror.js';

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

/** Pulls `team/app:v1` of `reg` through the mirror, checking the manifest and every blob. */
export async function pullThrough(mirrorUrl: string, reg: Registry, image: BuiltImage) {
  const base = `${mirrorUrl}/v2/${upstreamName(reg)}/team/app`;
  const manifest = await get(`${base}/manifests/v1`);
  assert.equal(manifest.status, 200, manifest.body.toString());
  assert.deepEqual(manifest.body, image.bytes);
  for (const blob of [image.config, ...image.layers]) {
    const res = await get(`${base}/blobs/${blob.digest}`);
    assert.equal(res.status, 200);
    assert.equal(res.body.length, blob.size);
  }
}
