import { createReadStream } from 'node:fs';
import { readFile } from 'node:fs/promises';

import { blobPath, findInLayout, type Descriptor } from './layout.js';
import {
  registryClient, type RegistryClient, type RegistryCredentials,
} from './registry-client.js';

export interface PushOptions {
  credentials?: RegistryCredentials;
  /** The tag in the layout's index.json (default: the destination tag, else the only one). */
  layoutTag?: string;
  /** Upload in PATCH chunks of this many bytes instead of one monolithic PUT. */
  chunkSize?: number;
  /** Also upload foreign layers; real registries never hold them, so off by default. */
  pushForeign?: boolean;
}

export interface PushResult {
  /** Digest of the top-level manifest or index, as the registry reported it. */
  digest: string;
  mediaType: string;
  blobsPushed: number;
  blobsSkipped: number;
  bytesPushed: number;
}

const INDEX_TYPES = new Set([
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
]);

/**
 * Pushes an image or index from an OCI layout with the distribution push API, byte for
 * byte: unlike a skopeo copy, nothing is converted, so every digest stays what
 * the layout says, Docker media types and foreign layers included.
 */
export async function pushLayout(
  registryUrl: string,
  repo: string,
  tag: string,
  layoutDir: string,
  options: PushOptions = {},
): Promise<PushResult> {
  const client = registryClient(registryUrl, options.credentials);
  const top = await findInLayout(layoutDir, options.layoutTag ?? tag)
    .catch(() => findInLayout(layoutDir));
  const result: PushResult = {
    digest: '', mediaType: top.mediaType, blobsPushed: 0, blobsSkipped: 0, bytesPushed: 0,
  };
  const ctx = { client, repo, layoutDir, options, result };
  result.digest = await pushManifest(ctx, top, tag);
  return result;
}

interface PushContext {
  client: RegistryClient;
  repo: string;
  layoutDir: string;
  options: PushOptions;
  result: PushResult;
}

async function pushManifest(ctx: PushContext, desc: Descriptor, reference: string) {
  const bytes = await readFile(blobPath(ctx.layoutDir, desc.digest));
  const parsed = JSON.parse(bytes.toString('utf8')) as {
    manifests?: Descriptor[];
    config?: Descriptor;
    layers?: Descriptor[];
  };

  if (INDEX_TYPES.has(desc.mediaType)) {
    // Children first: a registry may refuse an index whose manifests it lacks.
    for (const child of parsed.manifests ?? []) await pushManifest(ctx, child, child.digest);
  } else {
    for (const blob of [parsed.config, ...(parsed.layers ?? [])]) {
      if (!blob) continue;
      if (blob.urls?.length && !ctx.options.pushForeign) continue;
      await pushBlob(ctx, blob);
    }
  }

  const res = await ctx.client.request('PUT', `/v2/${ctx.repo}/manifests/${reference}`, {
    headers: { 'content-type': desc.mediaType },
    body: bytes,
  });
  if (res.status !== 201) {
    throw new Error(`PUT manifest ${ctx.repo}:${reference}: ${res.status} ${res.body}`);
  }
  const digest = res.headers['docker-content-digest'] ?? desc.digest;
  if (digest !== desc.digest) {
    throw new Error(`registry stored ${ctx.repo}:${reference} as ${digest}, not ${desc.digest}`);
  }
  return digest;
}

async function pushBlob(ctx: PushContext, blob: Descriptor): Promise<void> {
  const { client, repo, result } = ctx;
  const head = await client.request('HEAD', `/v2/${repo}/blobs/${blob.digest}`);
  if (head.status === 200) {
    result.blobsSkipped++;
    return;
  }

  const start = await client.request('POST', `/v2/${repo}/blobs/uploads/`);
  if (start.status !== 202 || !start.headers.location) {
    throw new Error(`POST upload for ${repo}: ${start.status} ${start.body}`);
  }
  let location = new URL(start.headers.location, client.baseUrl);
  const path = blobPath(ctx.layoutDir, blob.digest);
  const chunk = ctx.options.chunkSize;

  if (chunk) {
    for (let offset = 0; offset < blob.size; offset += chunk) {
      const end = Math.min(offset + chunk, blob.size) - 1;
      const res = await client.request('PATCH', location.href, {
        headers: {
          'content-type': 'application/octet-stream',
          'content-length': String(end - offset + 1),
          'content-range': `${offset}-${end}`,
        },
        body: () => createReadStream(path, { start: offset, end }),
      });
      if (res.status !== 202 || !res.headers.location) {
        throw new Error(`PATCH ${blob.digest} at ${offset}: ${res.status} ${res.body}`);
      }
      location = new URL(res.headers.location, client.baseUrl);
    }
  }

  location.searchParams.set('digest', blob.digest);
  const res = await client.request('PUT', location.href, chunk
    ? { headers: { 'content-length': '0' } }
    : {
      headers: { 'content-type': 'application/octet-stream', 'content-length': String(blob.size) },
      body: () => createReadStream(path),
    });
  if (res.status !== 201) throw new Error(`PUT blob ${blob.digest}: ${res.status} ${res.body}`);
  result.blobsPushed++;
  result.bytesPushed += blob.size;
}
