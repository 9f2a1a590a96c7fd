import { WharfError } from '../errors.js';

/** Where the container engine listens: a unix socket, a Windows named pipe or plain TCP. */
export type EngineAddress =
  | { kind: 'unix'; socketPath: string; text: string }
  | { kind: 'npipe'; socketPath: string; text: string }
  | { kind: 'tcp'; origin: string; text: string };

export const DEFAULT_UNIX_SOCKET = 'unix:///var/run/docker.sock';
export const DEFAULT_NAMED_PIPE = 'npipe:////./pipe/docker_engine';

/** The platform's usual engine address, as the docker CLI picks it. */
export function defaultEngineAddress(platform: NodeJS.Platform = process.platform): string {
  return platform === 'win32' ? DEFAULT_NAMED_PIPE : DEFAULT_UNIX_SOCKET;
}

function invalid(text: string, option: string, why: string): WharfError {
  return new WharfError('WHARF_BAD_USAGE', `${option}: ${why}: ${JSON.stringify(text)}`, {
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
    const what = `${option}: ${JSON.stringify(text)} is not supported`;
    throw new WharfError('WHARF_BAD_USAGE', what, {
      hint: 'wharf talks to the engine over its local socket, named pipe or plain tcp://; ' +
        'run wharf on the engine\'s host',
    });
  }
  throw invalid(text, option, 'unknown scheme');
}

/**
 * The address to use: the flag, else `DOCKER_HOST`, else the platform's default. A TLS setup
 * (`DOCKER_TLS_VERIFY`) is refused rather than silently spoken to in plain text.
 */
export function engineAddressFrom(
  flag: string | undefined,
  env: NodeJS.ProcessEnv = process.env,
): EngineAddress {
  if (flag) return parseEngineAddress(flag, '--engine');
  if (env.DOCKER_HOST) {
    if (env.DOCKER_TLS_VERIFY && env.DOCKER_HOST.startsWith('tcp://')) {
      const what = 'DOCKER_HOST asks for TLS, which wharf does not speak';
      throw new WharfError('WHARF_BAD_USAGE', what, {
        hint: 'run wharf on the engine\'s host and let it use the local socket or named pipe',
      });
    }
    return parseEngineAddress(env.DOCKER_HOST, 'DOCKER_HOST');
  }
  return parseEngineAddress(defaultEngineAddress());
}
