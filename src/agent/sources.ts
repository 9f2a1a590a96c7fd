import type { Dispatcher } from 'undici';
import { WharfError } from '../errors.js';
import type { Logger } from '../log.js';
import { DOCKER_HUB, type ImageRef } from '../oci/reference.js';
import { RegistryClient } from '../upstream/client.js';
import { redactUserinfo } from '../util/redact.js';

/** Where an image can come from: the mirror, then its origin registry. */
export interface Source {
  kind: 'mirror' | 'origin';
  client: RegistryClient;
  /** The repository as this registry's API names it (`127.0.0.1_5001/ci/build` on a mirror). */
  repo: string;
  /** The repository as the engine names it: `host[:port]/path`. */
  engineRepo: string;
  /** The registry host the engine connects to, for `X-Registry-Auth`. */
  host: string;
}

/**
 * How a mirror's path names an upstream registry: the host, `:` as `_`
 * (`127.0.0.1:5001` is `127.0.0.1_5001`), as `wharf serve` names its upstreams by default.
 */
export function upstreamName(registry: string): string {
  return registry.replace(/:/g, '_');
}

function isLoopback(host: string): boolean {
  const name = host.replace(/:\d+$/, '').replace(/^\[|\]$/g, '');
  return name === 'localhost' || name === '::1' || /^127\.\d+\.\d+\.\d+$/.test(name);
}

/**
 * The URL of an image's origin registry. The engine speaks plain HTTP to loopback
 * registries and TLS to every other, so wharf does the same and they agree on what answers.
 */
export function originUrl(registry: string): string {
  if (registry === DOCKER_HUB) return 'https://registry-1.docker.io';
  return `${isLoopback(registry) ? 'http' : 'https'}://${registry}`;
}

/** Checks `--mirror`: an http(s) URL of a registry root, nothing else in it. */
export function parseMirrorUrl(text: string, option = '--mirror'): URL {
  const given = JSON.stringify(withoutCredentials(text));
  // `HOST:PORT` parses as a URL whose scheme is the host, so it is caught before parsing.
  if (!/^[a-z][a-z0-9+.-]*:\/\//i.test(text)) {
    throw new WharfError('WHARF_BAD_USAGE', `${option}: ${given} has no http:// or https://`, {
      hint: `write the mirror as http://HOST:PORT, e.g. http://${withoutCredentials(text)}`,
    });
  }
  let url: URL;
  try {
    url = new URL(text);
  } catch {
    throw new WharfError('WHARF_BAD_USAGE', `${option}: ${given} is not a URL`, {
      hint: 'write the mirror as http://HOST:PORT, e.g. http://mirror.internal:5000',
    });
  }
  const problem =
    url.protocol !== 'http:' && url.protocol !== 'https:' ? 'is not http or https'
      : url.username || url.password ? 'carries credentials'
        : url.pathname !== '/' || url.search ? 'has a path; the engine pulls only from a root'
          : undefined;
  if (problem) {
    throw new WharfError('WHARF_BAD_USAGE', `${option}: ${given} ${problem}`, {
      hint: 'write the mirror as http://HOST:PORT; set its credentials in ' +
        'WHARF_MIRROR_USERNAME and WHARF_MIRROR_PASSWORD',
    });
  }
  return url;
}

/** The text of a URL with any `user:password@` taken out, fit for an error message. */
function withoutCredentials(text: string): string {
  return redactUserinfo(text, '');
}

export interface SourceOptions {
  mirror?: URL;
  logger?: Logger;
  dispatcher?: Dispatcher;
}

/** The places to resolve and pull an image from, in the order to try them. */
export function sourcesFor(image: ImageRef, options: SourceOptions): Source[] {
  const clientOptions = { logger: options.logger, dispatcher: options.dispatcher };
  const sources: Source[] = [];
  if (options.mirror) {
    const repo = `${upstreamName(image.registry)}/${image.repository}`;
    sources.push({
      kind: 'mirror',
      client: new RegistryClient({ name: 'mirror', url: options.mirror.origin }, clientOptions),
      repo,
      engineRepo: `${options.mirror.host}/${repo}`,
      host: options.mirror.host,
    });
  }
  sources.push({
    kind: 'origin',
    client: new RegistryClient(
      { name: upstreamName(image.registry), url: originUrl(image.registry) },
      clientOptions,
    ),
    repo: image.repository,
    engineRepo: `${image.registry}/${image.repository}`,
    host: image.registry,
  });
  return sources;
}
