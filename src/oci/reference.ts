import { WharfError } from '../errors.js';
import { parseDigest } from './digest.js';

// Grammar of the OCI distribution spec. Names and references are checked against it before
// any path or URL is built from them, which also rules out `..`, `%2f` and the like.
const NAME_COMPONENT = '[a-z0-9]+(?:(?:\\.|_|__|-+)[a-z0-9]+)*';
const NAME = new RegExp(`^${NAME_COMPONENT}(?:/${NAME_COMPONENT})*$`);
const TAG = /^[a-zA-Z0-9_][a-zA-Z0-9._-]{0,127}$/;
const MAX_NAME_LENGTH = 255;

export const DOCKER_HUB = 'docker.io';

export function isValidRepository(name: string): boolean {
  return name.length <= MAX_NAME_LENGTH && NAME.test(name);
}

export function isValidTag(tag: string): boolean {
  return TAG.test(tag);
}

export function checkRepository(name: string): string {
  if (!isValidRepository(name)) {
    throw new WharfError('WHARF_NAME_INVALID', `invalid repository name ${JSON.stringify(name)}`, {
      hint: 'repository names are lowercase letters, digits and separators (. _ __ -), ' +
        'in components joined by /',
    });
  }
  return name;
}

/** A manifest reference from a URL: a tag or a digest. */
export type ManifestRef = { kind: 'tag'; tag: string } | { kind: 'digest'; digest: string };

export function parseManifestRef(ref: string): ManifestRef {
  if (ref.includes(':')) return { kind: 'digest', digest: parseDigest(ref).value };
  if (!isValidTag(ref)) {
    throw new WharfError('WHARF_REFERENCE_INVALID', `invalid tag ${JSON.stringify(ref)}`, {
      hint: 'a tag is up to 128 letters, digits, _ . and -, not starting with . or -',
    });
  }
  return { kind: 'tag', tag: ref };
}

/** A full image reference as users write it: `[registry/]repository[:tag][@digest]`. */
export interface ImageRef {
  /** Registry host as written (`docker.io` when none was). */
  registry: string;
  repository: string;
  tag?: string;
  digest?: string;
}

function looksLikeRegistry(component: string): boolean {
  return component.includes('.') || component.includes(':') || component === 'localhost';
}

export function parseImageRef(input: string): ImageRef {
  return parseRef(input, undefined);
}

/**
 * An image named under a mirror's upstream NAME (`corp/ci/build:v1`, `127.0.0.1_5001/app`):
 * `name`, its first component, is taken as the registry whatever its shape.
 */
export function parseNamedImageRef(input: string, name: string): ImageRef {
  return parseRef(input, name);
}

function parseRef(input: string, name: string | undefined): ImageRef {
  const invalid = (why: string) =>
    new WharfError('WHARF_REFERENCE_INVALID', `invalid image reference ${JSON.stringify(input)}: ${why}`, {
      hint: 'write an image as [registry/]repository[:tag][@sha256:...], e.g. ' +
        'registry.example.io/ci/build:2024',
    });
  if (input.length === 0 || /\s/.test(input)) throw invalid('empty or contains spaces');

  let rest = input;
  let digest: string | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = parseDigest(rest.slice(at + 1)).value;
    rest = rest.slice(0, at);
  }

  let registry = DOCKER_HUB;
  const slash = rest.indexOf('/');
  if (name !== undefined) {
    if (rest.slice(0, slash) !== name) throw invalid(`does not start with ${name}/`);
    registry = name;
    rest = rest.slice(slash + 1);
  } else if (slash > 0 && looksLikeRegistry(rest.slice(0, slash))) {
    registry = rest.slice(0, slash);
    rest = rest.slice(slash + 1);
    if (!/^[a-zA-Z0-9.-]+(?::[0-9]+)?$/.test(registry)) throw invalid('bad registry host');
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!isValidTag(tag)) throw invalid(`bad tag ${JSON.stringify(tag)}`);
  }

  if (registry === DOCKER_HUB && !rest.includes('/')) rest = `library/${rest}`;
  if (!isValidRepository(rest)) throw invalid(`bad repository ${JSON.stringify(rest)}`);
  if (!tag && !digest) tag = 'latest';

  const ref: ImageRef = { registry, repository: rest };
  if (tag) ref.tag = tag;
  if (digest) ref.digest = digest;
  return ref;
}

export function formatImageRef(ref: ImageRef): string {
  let out = `${ref.registry}/${ref.repository}`;
  if (ref.tag) out += `:${ref.tag}`;
  if (ref.digest) out += `@${ref.digest}`;
  return out;
}
