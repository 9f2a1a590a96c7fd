import { availableParallelism } from 'node:os';
import { mapLimit } from '../../src/agent/retry.js';

import {
  blobPath, initLayout, tagInLayout, writeBlob, type Descriptor, type Platform,
} from './layout.js';
import { writeRandomLayer } from './random-layer.js';

export type ImageFormat = 'oci' | 'docker';

export const MEDIA_TYPES = {
  oci: {
    manifest: 'application/vnd.oci.image.manifest.v1+json',
    index: 'application/vnd.oci.image.index.v1+json',
    config: 'application/vnd.oci.image.config.v1+json',
    layerGzip: 'application/vnd.oci.image.layer.v1.tar+gzip',
    layerTar: 'application/vnd.oci.image.layer.v1.tar',
    foreign: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
  },
  docker: {
    manifest: 'application/vnd.docker.distribution.manifest.v2+json',
    index: 'application/vnd.docker.distribution.manifest.list.v2+json',
    config: 'application/vnd.docker.container.image.v1+json',
    layerGzip: 'application/vnd.docker.image.rootfs.diff.tar.gzip',
    layerTar: 'application/vnd.docker.image.rootfs.diff.tar',
    foreign: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  },
} as const;

export interface PlatformSpec {
  /** Sizes in bytes of the random content of each (distributable) layer. */
  layers: number[];
  os?: string;
  architecture?: string;
  variant?: string;
  /** Windows build, e.g. 10.0.20348.2113; defaults to 10.0.20348.1 for windows. */
  osVersion?: string;
  /** Legacy foreign layers put first, like a Windows base layer; they carry `urls`. */
  foreignLayers?: number;
  /** Bytes of random content in each foreign layer (default 4096). */
  foreignLayerSize?: number;
  /** Where the foreign layers claim to live; the digest is appended. */
  foreignUrlBase?: string;
  /** gzip the layers at `gzipLevel` (default true). */
  compress?: boolean;
  gzipLevel?: number;
}

export interface ImageSpec extends PlatformSpec {
  format?: ImageFormat;
  /** Tag recorded in index.json (default "latest"). */
  tag?: string;
}

export interface BlobInfo {
  digest: string;
  size: number;
  mediaType: string;
  /** Where the blob is in the layout. */
  path: string;
}

export interface LayerInfo extends BlobInfo {
  diffId: string;
  /** Set on foreign layers: their blob is in the layout but is never pushed. */
  urls?: string[];
}

export interface BuiltImage {
  dir: string;
  tag: string;
  format: ImageFormat;
  /** The manifest's digest, media type, size and exact bytes. */
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer;
  platform: Platform;
  config: BlobInfo;
  layers: LayerInfo[];
  /** Config and every layer, foreign ones included. */
  blobs: BlobInfo[];
  /** Bytes of the manifest, config and all layers. */
  totalSize: number;
  /** Bytes a client downloads from the registry: config and distributable layers. */
  pullSize: number;
}

export interface BuiltIndex {
  dir: string;
  tag: string;
  format: ImageFormat;
  digest: string;
  mediaType: string;
  size: number;
  bytes: Buffer;
  images: BuiltImage[];
  /** Every child manifest, config and layer. */
  blobs: BlobInfo[];
  /** Bytes of the index, child manifests, configs and layers. */
  totalSize: number;
}

// A fixed date keeps a config's bytes a function of its layers only.
const CREATED = '2024-01-01T00:00:00Z';

/** Writes one image (random layers, config, manifest) into the OCI layout at `dir`. */
export async function buildImage(dir: string, spec: ImageSpec): Promise<BuiltImage> {
  const format = spec.format ?? 'oci';
  const tag = spec.tag ?? 'latest';
  await initLayout(dir);
  const image = await writeImage(dir, spec, format, tag);
  await tagInLayout(dir, tag, descriptorOf(image));
  return image;
}

/** Writes a multi-platform index (OCI index or Docker manifest list) and its images. */
export async function buildIndex(
  dir: string,
  platforms: PlatformSpec[],
  options: { format?: ImageFormat; tag?: string } = {},
): Promise<BuiltIndex> {
  const format = options.format ?? 'oci';
  const tag = options.tag ?? 'latest';
  await initLayout(dir);

  const images: BuiltImage[] = [];
  for (const spec of platforms) images.push(await writeImage(dir, spec, format, tag));

  const mediaType = MEDIA_TYPES[format].index;
  const index = {
    schemaVersion: 2,
    mediaType,
    manifests: images.map((image) => ({ ...descriptorOf(image), platform: image.platform })),
  };
  const bytes = Buffer.from(JSON.stringify(index, null, 2));
  const { digest, size } = await writeBlob(dir, bytes);
  await tagInLayout(dir, tag, { mediaType, digest, size });

  const blobs = images.flatMap((image) => [manifestBlob(image), ...image.blobs]);
  const totalSize = size + images.reduce((sum, image) => sum + image.totalSize, 0);
  return { dir, tag, format, digest, mediaType, size, bytes, images, blobs, totalSize };
}

async function writeImage(
  dir: string,
  spec: PlatformSpec,
  format: ImageFormat,
  tag: string,
): Promise<BuiltImage> {
  const types = MEDIA_TYPES[format];
  const platform = platformOf(spec);
  const gzipLevel = spec.compress === false ? undefined : spec.gzipLevel ?? 1;
  const foreignSize = spec.foreignLayerSize ?? 4096;
  const urlBase = spec.foreignUrlBase ?? 'http://127.0.0.1:9/foreign/';

  const jobs = [
    ...Array.from({ length: spec.foreignLayers ?? 0 }, () => ({
      size: foreignSize, foreign: true,
    })),
    ...spec.layers.map((size) => ({ size, foreign: false })),
  ];
  const written = await mapLimit(jobs, availableParallelism(), (job, i) =>
    writeRandomLayer(dir, {
      contentSize: job.size,
      fileName: `wharf-layer-${i}.bin`,
      // Foreign layers are always gzip'd: their media type says so.
      gzipLevel: job.foreign ? spec.gzipLevel ?? 1 : gzipLevel,
    }));
  const layers: LayerInfo[] = written.map((layer, i) => {
    const foreign = jobs[i]!.foreign;
    const plain = gzipLevel === undefined ? types.layerTar : types.layerGzip;
    const mediaType = foreign ? types.foreign : plain;
    const info: LayerInfo = { ...layer, mediaType, path: blobPath(dir, layer.digest) };
    if (foreign) info.urls = [`${urlBase}${layer.digest}`];
    return info;
  });

  const configJson = {
    created: CREATED,
    architecture: platform.architecture,
    os: platform.os,
    ...(platform['os.version'] ? { 'os.version': platform['os.version'] } : {}),
    ...(platform.variant ? { variant: platform.variant } : {}),
    config: {},
    rootfs: { type: 'layers', diff_ids: layers.map((layer) => layer.diffId) },
    history: layers.map((layer, i) => ({
      created: CREATED,
      created_by: `wharf test layer ${i}${layer.urls ? ' (foreign)' : ''}`,
    })),
  };
  const configBytes = Buffer.from(JSON.stringify(configJson));
  const configRef = await writeBlob(dir, configBytes);
  const config: BlobInfo = {
    ...configRef, mediaType: types.config, path: blobPath(dir, configRef.digest),
  };

  const manifest = {
    schemaVersion: 2,
    mediaType: types.manifest,
    config: descriptor(config),
    layers: layers.map((layer) => ({
      ...descriptor(layer),
      ...(layer.urls ? { urls: layer.urls } : {}),
    })),
  };
  const bytes = Buffer.from(JSON.stringify(manifest, null, 2));
  const { digest, size } = await writeBlob(dir, bytes);

  const blobs: BlobInfo[] = [config, ...layers];
  const totalSize = size + blobs.reduce((sum, blob) => sum + blob.size, 0);
  const pullSize = config.size + layers.reduce((sum, l) => sum + (l.urls ? 0 : l.size), 0);
  return {
    dir, tag, format, digest, mediaType: types.manifest, size, bytes, platform,
    config, layers, blobs, totalSize, pullSize,
  };
}

function platformOf(spec: PlatformSpec): Platform {
  const os = spec.os ?? 'linux';
  const platform: Platform = { architecture: spec.architecture ?? 'amd64', os };
  const osVersion = spec.osVersion ?? (os === 'windows' ? '10.0.20348.1' : undefined);
  if (osVersion) platform['os.version'] = osVersion;
  if (spec.variant) platform.variant = spec.variant;
  return platform;
}

function descriptor(blob: BlobInfo): Descriptor {
  return { mediaType: blob.mediaType, digest: blob.digest, size: blob.size };
}

function descriptorOf(image: BuiltImage): Descriptor {
  return { mediaType: image.mediaType, digest: image.digest, size: image.size };
}

function manifestBlob(image: BuiltImage): BlobInfo {
  return {
    digest: image.digest, size: image.size, mediaType: image.mediaType,
    path: blobPath(image.dir, image.digest),
  };
}
