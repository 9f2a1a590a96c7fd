import { WharfError } from '../errors.js';
import { parseDigest } from './digest.js';
import { MEDIA, isIndexType, isManifestType } from './media-types.js';

export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  urls?: string[];
  platform?: Platform;
  annotations?: Record<string, string>;
}

export interface Platform {
  architecture: string;
  os: string;
  'os.version'?: string;
  'os.features'?: string[];
  variant?: string;
}

export interface ImageManifest {
  kind: 'manifest';
  mediaType: string;
  config: Descriptor;
  layers: Descriptor[];
}

export interface ImageIndex {
  kind: 'index';
  mediaType: string;
  manifests: Descriptor[];
}

export type ParsedManifest = ImageManifest | ImageIndex;

function invalid(why: string): WharfError {
  return new WharfError('WHARF_MANIFEST_INVALID', `invalid manifest: ${why}`, {
    hint: 'the registry sent a document that is not an image manifest or index',
  });
}

function descriptor(value: unknown, where: string): Descriptor {
  if (typeof value !== 'object' || value === null) throw invalid(`${where} is not an object`);
  const d = value as Record<string, unknown>;
  if (typeof d.mediaType !== 'string') throw invalid(`${where}.mediaType is missing`);
  if (typeof d.digest !== 'string') throw invalid(`${where}.digest is missing`);
  if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) {
    throw invalid(`${where}.size is not a size`);
  }
  try {
    parseDigest(d.digest);
  } catch {
    throw invalid(`${where}.digest ${JSON.stringify(d.digest)} is not a digest`);
  }
  return value as Descriptor;
}

/**
 * Parses a manifest or index and checks every descriptor in it, so nothing it names is used
 * unchecked. `headerType` is the Content-Type it came with, used when the body has no
 * mediaType field (allowed for OCI documents).
 */
export function parseManifest(body: Uint8Array, headerType?: string): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(body).toString('utf8'));
  } catch {
    throw invalid('not JSON');
  }
  if (typeof doc !== 'object' || doc === null) throw invalid('not a JSON object');
  const m = doc as Record<string, unknown>;
  // A Content-Type may carry parameters (`; charset=utf-8`); the media type is what precedes.
  const fromHeader = headerType?.split(';')[0]!.trim().toLowerCase() || undefined;
  const mediaType = typeof m.mediaType === 'string' ? m.mediaType : fromHeader;

  if (Array.isArray(m.manifests) && (mediaType === undefined || isIndexType(mediaType))) {
    return {
      kind: 'index',
      mediaType: mediaType ?? MEDIA.ociIndex,
      manifests: m.manifests.map((d, i) => descriptor(d, `manifests[${i}]`)),
    };
  }
  if (Array.isArray(m.layers) && (mediaType === undefined || isManifestType(mediaType))) {
    return {
      kind: 'manifest',
      mediaType: mediaType ?? MEDIA.ociManifest,
      config: descriptor(m.config, 'config'),
      layers: m.layers.map((d, i) => descriptor(d, `layers[${i}]`)),
    };
  }
  if (m.schemaVersion === 1) {
    throw new WharfError('WHARF_MANIFEST_INVALID', 'schema 1 manifests are not supported', {
      hint: 'push the image again with a current client; schema 1 is deprecated',
    });
  }
  throw invalid(`unknown media type ${JSON.stringify(mediaType)}`);
}

/**
 * The content a manifest refers to and the mirror can hold: config and layers, minus foreign
 * layers that live at `urls` outside the registry; for an index, its child manifests.
 */
export function children(manifest: ParsedManifest): Descriptor[] {
  if (manifest.kind === 'index') return manifest.manifests;
  return [manifest.config, ...manifest.layers].filter((d) => !isForeign(d));
}

export function isForeign(d: Descriptor): boolean {
  return (
    d.mediaType === MEDIA.dockerForeignLayer ||
    d.mediaType === MEDIA.ociNondistributableLayer ||
    (Array.isArray(d.urls) && d.urls.length > 0 && d.mediaType.includes('foreign'))
  );
}
