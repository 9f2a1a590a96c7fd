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
  return encodeRegistryAuth({
    username: found.username,
    password: found.password,
    // Docker Hub is known to the engine by its historical index address.
    serveraddress: host === 'docker.io' ? 'https://index.docker.io/v1/' : host,
  });
}

export function encodeRegistryAuth(auth: {
  username: string;
  password: string;
  serveraddress: string;
}): string {
  // URL-safe base64 with its `=` padding: the engine decodes with Go's URLEncoding, which
  // needs the padding, and quietly pulls anonymously when it cannot decode the header.
  return Buffer.from(JSON.stringify(auth), 'utf8').toString('base64')
    .replace(/\+/g, '-')
    .replace(/\//g, '_');
}
