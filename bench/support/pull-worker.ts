import { createHash } from 'node:crypto';
import { Agent, get, type IncomingMessage } from 'node:http';

import { serve } from './child.js';

/**
 * One benchmark client, in its own process: pulls an image the way a container engine does.
 * The manifest first, then the config and layers a few at a time, each blob's sha256 checked
 * as it streams and its bytes dropped, so the client holds no image in memory or on disk.
 *
 * On a fleet the clients are other machines; here eight of them share the mirror's two cores,
 * so their CPU is taken from the system measured. node:http hands a body over in the socket's
 * own buffers, where undici copies every byte into its parser's memory and out again: with it
 * the clients spent more CPU receiving than the mirror spent serving, for either mirror.
 */

export interface PullJob {
  /** The mirror's base URL, http://127.0.0.1:PORT. */
  registry: string;
  /** The repository as this mirror names it (with or without an upstream prefix). */
  repo: string;
  tag: string;
  /** Blobs downloaded at once: docker's `max-concurrent-downloads` defaults to 3. */
  parallel: number;
}

export interface PullOutcome {
  ok: boolean;
  /** From the job's arrival to the last blob verified. */
  ms: number;
  /** Manifest and blob bytes received. */
  bytes: number;
  blobs: number;
  error?: string;
}

interface Descriptor {
  digest: string;
  size: number;
  mediaType?: string;
}

const MANIFEST_ACCEPT = [
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
].join(', ');

async function pull(job: PullJob): Promise<PullOutcome> {
  const started = performance.now();
  // A fresh pool per pull: each one starts with cold connections, for either mirror alike.
  const agent = new Agent({ keepAlive: true, maxSockets: job.parallel + 1 });
  const outcome: PullOutcome = { ok: false, ms: 0, bytes: 0, blobs: 0 };
  try {
    const blobs = await blobsOf(job, job.tag, agent, outcome);
    let next = 0;
    const lane = async () => {
      while (next < blobs.length) {
        const blob = blobs[next++]!;
        // Awaited first: `bytes += await ...` would read the total before the wait and
        // drop what the other lanes added meanwhile.
        const size = await fetchBlob(job, blob, agent);
        outcome.bytes += size;
        outcome.blobs++;
      }
    };
    await Promise.all(Array.from({ length: job.parallel }, lane));
    outcome.ok = true;
  } catch (err) {
    outcome.error = (err as Error).message;
  } finally {
    outcome.ms = performance.now() - started;
    agent.destroy();
  }
  return outcome;
}

/** The config and layers to fetch; an index is followed to its first manifest. */
async function blobsOf(
  job: PullJob,
  ref: string,
  agent: Agent,
  outcome: PullOutcome,
): Promise<Descriptor[]> {
  const url = `${job.registry}/v2/${job.repo}/manifests/${ref}`;
  const res = await send(url, agent, { accept: MANIFEST_ACCEPT });
  const body = Buffer.concat(await res.toArray());
  if (res.statusCode !== 200) {
    throw new Error(`GET ${url}: ${res.statusCode} ${body.toString('utf8').slice(0, 200)}`);
  }
  outcome.bytes += body.length;
  const manifest = JSON.parse(body.toString('utf8')) as {
    manifests?: Descriptor[];
    config?: Descriptor;
    layers?: Descriptor[];
  };
  const first = manifest.manifests?.[0];
  if (first) return blobsOf(job, first.digest, agent, outcome);
  if (!manifest.config) throw new Error(`${url}: neither an index nor an image manifest`);
  return [manifest.config, ...(manifest.layers ?? [])];
}

async function fetchBlob(job: PullJob, blob: Descriptor, agent: Agent): Promise<number> {
  const url = `${job.registry}/v2/${job.repo}/blobs/${blob.digest}`;
  const res = await send(url, agent);
  if (res.statusCode !== 200) {
    const text = Buffer.concat(await res.toArray()).toString('utf8');
    throw new Error(`GET ${url}: ${res.statusCode} ${text.slice(0, 200)}`);
  }
  const hash = createHash('sha256');
  let size = 0;
  for await (const chunk of res as AsyncIterable<Buffer>) {
    hash.update(chunk);
    size += chunk.length;
  }
  const digest = `sha256:${hash.digest('hex')}`;
  if (digest !== blob.digest || size !== blob.size) {
    throw new Error(`${blob.digest}: got ${size} of ${blob.size} bytes hashing to ${digest}`);
  }
  return size;
}

/**
 * A GET whose response the caller reads. Ten idle minutes fail it: registry:2 may hold a
 * waiting client a long time before the first byte, but a benchmark must not hang.
 */
function send(url: string, agent: Agent, headers: Record<string, string> = {}): Promise<IncomingMessage> {
  return new Promise((resolve, reject) => {
    const req = get(url, { agent, headers, timeout: 600_000 }, resolve);
    req.on('timeout', () => req.destroy(new Error(`GET ${url}: nothing for 600 s`)));
    req.on('error', reject);
  });
}

serve(pull);
