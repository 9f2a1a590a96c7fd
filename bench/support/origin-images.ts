import { rm } from 'node:fs/promises';

import { buildImage } from '../../test/helpers/images.js';
import { pushLayout } from '../../test/helpers/push.js';
import { makeTempDir } from '../../test/helpers/tmp.js';

export interface ImageSpec {
  repo: string;
  tag: string;
  /** Bytes of random content per layer. */
  layers: number[];
}

/** An image at the origin, with the figures the benchmark compares against. */
export interface OriginImage {
  repo: string;
  tag: string;
  /** Manifest, config and layers: what one client downloads, the ideal origin traffic. */
  pullBytes: number;
  largestBlob: number;
  layers: number;
}

/**
 * Builds random-layer images and pushes them to the origin, byte for byte. Layers are plain
 * tar, not gzip: random bytes do not compress anyway, and skipping gzip makes a gigabyte image
 * take seconds to build instead of a minute.
 */
export async function pushImages(originUrl: string, specs: ImageSpec[]): Promise<OriginImage[]> {
  const images: OriginImage[] = [];
  for (const spec of specs) {
    const dir = await makeTempDir('bench-layout');
    const built = await buildImage(dir, { layers: spec.layers, compress: false, tag: spec.tag });
    await pushLayout(originUrl, spec.repo, spec.tag, dir);
    // The origin holds its own copy now; gigabytes of layout would only fill /tmp.
    await rm(dir, { recursive: true, force: true });
    images.push({
      repo: spec.repo,
      tag: spec.tag,
      pullBytes: built.size + built.pullSize,
      largestBlob: Math.max(...built.layers.map((l) => l.size)),
      layers: built.layers.length,
    });
  }
  return images;
}
