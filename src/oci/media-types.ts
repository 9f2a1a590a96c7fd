export const MEDIA = {
  dockerManifest: 'application/vnd.docker.distribution.manifest.v2+json',
  dockerManifestList: 'application/vnd.docker.distribution.manifest.list.v2+json',
  ociManifest: 'application/vnd.oci.image.manifest.v1+json',
  ociIndex: 'application/vnd.oci.image.index.v1+json',
  dockerForeignLayer: 'application/vnd.docker.image.rootfs.foreign.diff.tar.gzip',
  ociNondistributableLayer: 'application/vnd.oci.image.layer.nondistributable.v1.tar+gzip',
} as const;

/** What the mirror and the agent ask an upstream for: every manifest and index type. */
export const MANIFEST_ACCEPT = [
  MEDIA.ociIndex,
  MEDIA.dockerManifestList,
  MEDIA.ociManifest,
  MEDIA.dockerManifest,
].join(', ');

export function isIndexType(mediaType: string | undefined): boolean {
  return mediaType === MEDIA.ociIndex || mediaType === MEDIA.dockerManifestList;
}

export function isManifestType(mediaType: string | undefined): boolean {
  return mediaType === MEDIA.ociManifest || mediaType === MEDIA.dockerManifest;
}
