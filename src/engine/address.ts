import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { WharfError } from '../errors.js';
import { redactUserinfo } from '../util/redact.js';

/**
 * TLS to an engine on TCP, as the docker CLI sets it up from `DOCKER_TLS_VERIFY`,
 * `DOCKER_TLS` and `DOCKER_CERT_PATH`: files that do not exist are left out.
 */
export interface EngineTls {
  /** Check the engine's certificate (against `caFile`, else the system's roots). */
  verify: boolean;
  caFile?: string;
  certFile?: string;
  keyFile?: string;
  /** Where the files were looked for, for error messages. */
  certPath: string;
}

/** Where the container engine listens: a unix socket, a Windows named pipe or TCP. */
export type EngineAddress =
  | { kind: 'unix'; socketPath: string; text: string }
  | { kind: 'npipe'; socketPath: string; text: string }
  | { kind: 'tcp'; origin: string; text: string; tls?: EngineTls };

export const DEFAULT_UNIX_SOCKET = 'unix:///var/run/docker.sock';
export const DEFAULT_NAMED_PIPE = 'npipe:////./pipe/docker_engine';

/** The platform's usual engine address, as the docker CLI picks it. */
export function defaultEngineAddress(platform: NodeJS.Platform = process.platform): string {
  return platform === 'win32' ? DEFAULT_NAMED_PIPE : DEFAULT_UNIX_SOCKET;
}


function invalid(text: string, option: string, why: string): WharfError {
  const quoted = JSON.stringify(redactUserinfo(text));
  return new WharfError('WHARF_BAD_USAGE', `${option}: ${why}: ${quoted}`, {
    hint: 'write the engine as unix:///var/run/docker.sock, npipe:////./pipe/docker_engine ' +
      'or tcp://HOST:PORT',
  });
}

/**
 * Parses an engine address as `DOCKER_HOST` holds it. The named-pipe form has four slashes
 * (`npipe:////./pipe/NAME`), which Node opens as `\\.\pipe\NAME`.
 */
export function parseEngineAddress(text: string, option = '--engine'): EngineAddress {
  const trimmed = text.trim();
  if (trimmed.startsWith('unix://')) {
    const socketPath = trimmed.slice('unix://'.length);
    if (!socketPath.startsWith('/')) throw invalid(text, option, 'a unix socket path is absolute');
    return { kind: 'unix', socketPath, text: trimmed };
  }
  if (trimmed.startsWith('npipe://')) {
    const rest = trimmed.slice('npipe://'.length).replace(/\//g, '\\');
    const pipe = /^\\\\[^\\]+\\pipe\\[^\\]+$/.test(rest) ? rest : undefined;
    if (!pipe) throw invalid(text, option, 'a named pipe looks like npipe:////./pipe/NAME');
    return { kind: 'npipe', socketPath: pipe, text: trimmed };
  }
  if (trimmed.startsWith('tcp://') || trimmed.startsWith('http://')) {
    let url: URL;
    try {
      url = new URL(trimmed.replace(/^tcp:/, 'http:'));
    } catch {
      throw invalid(text, option, 'not a URL');
    }
    if (!url.port) url.port = '2375';
    if (url.username || url.password) throw invalid(text, option, 'credentials in the address');
    return { kind: 'tcp', origin: url.origin, text: trimmed };
  }
  if (trimmed.startsWith('ssh://') || trimmed.startsWith('https://')) {
    const what = `${option}: ${JSON.stringify(redactUserinfo(text))} is not supported`;
    throw new WharfError('WHARF_BAD_USAGE', what, {
      hint: 'wharf talks to the engine over its local socket, named pipe or tcp:// (with TLS ' +
        'from DOCKER_TLS_VERIFY and DOCKER_CERT_PATH); run wharf on the engine\'s host',
    });
  }
  throw invalid(text, option, 'unknown scheme');
}

/**
 * The address to use: the flag, else `DOCKER_HOST`, else the platform's default. A TCP address
 * speaks TLS when `DOCKER_TLS_VERIFY` or `DOCKER_TLS` is set, with the certificates of
 * `DOCKER_CERT_PATH` (default `~/.docker`), the way the docker CLI reads them.
 */
export function engineAddressFrom(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): EngineAddress {
  const address = flag
    ? parseEngineAddress(flag, '--engine')
    : parseEngineAddress(env.DOCKER_HOST || defaultEngineAddress(), env.DOCKER_HOST ? 'DOCKER_HOST' : '--engine');
  if (address.kind !== 'tcp') return address;
  const verify = Boolean(env.DOCKER_TLS_VERIFY);
  if (!verify && !env.DOCKER_TLS) return address;
  const certPath = env.DOCKER_CERT_PATH || join(homedir(), '.docker');
  const file = (name: string) => {
    const path = join(certPath, name);
    return existsSync(path) ? path : undefined;
  };
  const url = new URL(address.origin);
  url.protocol = 'https:';
  // An address written without a port means the TLS port, as with the docker CLI.
  if (!/:\d+\/?$/.test(address.text)) url.port = '2376';
  return {
    ...address,
    origin: url.origin,
    tls: { verify, caFile: file('ca.pem'), certFile: file('cert.pem'), keyFile: file('key.pem'), certPath },
  };
}
