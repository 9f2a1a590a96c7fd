import { credentialsFromDockerConfig } from '../upstream/credentials.js';

/**
 * The `X-Registry-Auth` header for a pull from `host`, from the user's docker `config.json`
 * (helpers included), or undefined when it holds nothing for that host. The engine never reads
 * that file itself: the docker CLI sends what it finds there, so wharf does the same.
 *
 * The value is a JSON object in URL-safe base64; it holds a password, so it goes to the engine
 * and nowhere else.
 */
export async function registryAuthFor(
  host: string,
  configPath?: string,
): Promise<string | undefined> {
  const found = await credentialsFromDockerConfig(host, configPath);
  if (!found) return undefined;
  // Docker Hub is known to the engine by its historical index address.
  const serveraddress = host === 'docker.io' ? 'https://index.docker.io/v1/' : host;
  if (found.identityToken) {
    // As the docker CLI sends it: the engine trades an identity token for bearer tokens with
    // the OAuth2 refresh_token grant; as a password it would be refused.
    return encodeRegistryAuth({ username: found.username, identitytoken: found.identityToken,
      serveraddress });
  }
  return encodeRegistryAuth({ username: found.username, password: found.password,
    serveraddress });
}

/** The fields of the engine's `AuthConfig` that wharf sends; empty ones are left out. */
export interface RegistryAuth {
  username?: string;
  password?: string;
  identitytoken?: string;
  serveraddress: string;
}

export function encodeRegistryAuth(fields: RegistryAuth): string {
  const auth = Object.fromEntries(Object.entries(fields).filter(([, v]) => v));
  // URL-safe base64 with its `=` padding: the engine decodes with Go's URLEncoding, which
  // needs the padding, and quietly pulls anonymously when it cannot decode the header.
  return Buffer.from(JSON.stringify(auth), 'utf8').toString('base64')
    .replace(/\+/g, '-')
    .replace(/\//g, '_');
}
