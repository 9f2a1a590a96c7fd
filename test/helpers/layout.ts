import { createHash, randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, stat, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { Descriptor, Platform } from '../../src/oci/manifest.js';

/** The annotation that names a tag in an OCI layout's index.json. */
export const REF_NAME = 'org.opencontainers.image.ref.name';

export type { Descriptor, Platform };

export interface LayoutIndex {
  schemaVersion: 2;
  mediaType?: string;
  manifests: Descriptor[];
}

export function blobPath(dir: string, digest: string): string {
  const [algorithm, hex] = digest.split(':');
  if (!algorithm || !hex) throw new Error(`not a digest: ${digest}`);
  return join(dir, 'blobs', algorithm, hex);
}

export function sha256(data: Buffer | string): string {
  return `sha256:${createHash('sha256').update(data).digest('hex')}`;
}

/** Creates the folders and the `oci-layout` marker; harmless on an existing layout. */
export async function initLayout(dir: string): Promise<void> {
  await mkdir(join(dir, 'blobs', 'sha256'), { recursive: true });
  await writeFile(join(dir, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
}

/** A temp path inside the blobs folder, so the final rename never crosses filesystems. */
export function tempBlobPath(dir: string): string {
  return join(dir, 'blobs', 'sha256', `.tmp-${randomBytes(8).toString('hex')}`);
}

/** Writes a small blob (manifest, config) and returns its descriptor without media type. */
export async function writeBlob(
  dir: string,
  data: Buffer,
): Promise<{ digest: string; size: number }> {
  const digest = sha256(data);
  const path = blobPath(dir, digest);
  const exists = await stat(path).then(() => true, () => false);
  if (!exists) {
    const tmp = tempBlobPath(dir);
    await writeFile(tmp, data);
    await rename(tmp, path);
  }
  return { digest, size: data.length };
}

export async function readLayoutIndex(dir: string): Promise<LayoutIndex> {
  try {
    return JSON.parse(await readFile(join(dir, 'index.json'), 'utf8')) as LayoutIndex;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw err;
    return { schemaVersion: 2, manifests: [] };
  }
}

/** Points `tag` at `descriptor` in index.json, replacing an older entry with that tag. */
export async function tagInLayout(
  dir: string,
  tag: string,
  descriptor: Descriptor,
): Promise<void> {
  const index = await readLayoutIndex(dir);
  const manifests = index.manifests.filter((d) => d.annotations?.[REF_NAME] !== tag);
  manifests.push({ ...descriptor, annotations: { ...descriptor.annotations, [REF_NAME]: tag } });
  const next: LayoutIndex = {
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.index.v1+json',
    manifests,
  };
  await writeFile(join(dir, 'index.json'), JSON.stringify(next));
}

/** The descriptor index.json holds for `tag`, or the only one when `tag` is omitted. */
export async function findInLayout(dir: string, tag?: string): Promise<Descriptor> {
  const { manifests } = await readLayoutIndex(dir);
  const found = tag === undefined
    ? (manifests.length === 1 ? manifests[0] : undefined)
    : manifests.find((d) => d.annotations?.[REF_NAME] === tag);
  if (!found) {
    const tags = manifests.map((d) => d.annotations?.[REF_NAME]).join(', ');
    throw new Error(`OCI layout ${dir}: no manifest tagged ${tag ?? '(only one)'}; has ${tags}`);
  }
  return found;
}
