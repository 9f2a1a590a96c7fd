import { execFile } from 'node:child_process';
import { copyFile, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { makeTempDir } from './tmp.js';

const run = promisify(execFile);

/** The files of a small PKI for a TLS engine, laid out as DOCKER_CERT_PATH expects. */
export interface EnginePki {
  /** DOCKER_CERT_PATH for clients: ca.pem, cert.pem, key.pem. */
  clientDir: string;
  ca: string;
  serverCert: string;
  serverKey: string;
  /** A CA that signed neither side, for "wrong CA" cases: a DOCKER_CERT_PATH of its own. */
  strangerDir: string;
}

async function openssl(args: string[], cwd: string): Promise<void> {
  try {
    await run('openssl', args, { cwd });
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`openssl ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

async function makeCa(dir: string, name: string): Promise<void> {
  await openssl([
    'req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', 'ca-key.pem', '-out', 'ca.pem', '-days', '2', '-subj', `/CN=${name}`,
  ], dir);
}

/** Issues a certificate signed by the CA in `caDir`, with the given extensions. */
async function issue(caDir: string, dir: string, name: string, ext: string): Promise<void> {
  await writeFile(join(dir, `${name}.ext`), ext);
  await openssl([
    'req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes',
    '-keyout', `${name}-key.pem`, '-out', `${name}.csr`, '-subj', `/CN=${name}`,
  ], dir);
  await openssl([
    'x509', '-req', '-in', `${name}.csr`, '-CA', join(caDir, 'ca.pem'), '-CAkey', join(caDir, 'ca-key.pem'),
    '-CAcreateserial', '-out', `${name}.pem`, '-days', '2', '-extfile', `${name}.ext`,
  ], dir);
}

/**
 * A CA, a server certificate for 127.0.0.1 and a client certificate, the way a TLS-protected
 * engine is set up (`dockerd --tlsverify`), plus a second CA that trusts neither.
 */
export async function makeEnginePki(): Promise<EnginePki> {
  const dir = await makeTempDir('pki');
  await makeCa(dir, 'wharf-test-ca');
  await issue(dir, dir, 'server', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n');
  await issue(dir, dir, 'client', 'extendedKeyUsage=clientAuth\n');

  const clientDir = await makeTempDir('docker-certs');
  const strangerDir = await makeTempDir('stranger-certs');
  await makeCa(strangerDir, 'wharf-test-stranger');
  await issue(strangerDir, strangerDir, 'client', 'extendedKeyUsage=clientAuth\n');
  for (const [from, to] of [[dir, clientDir], [strangerDir, strangerDir]] as const) {
    await copyFile(join(from, 'client.pem'), join(to, 'cert.pem'));
    await copyFile(join(from, 'client-key.pem'), join(to, 'key.pem'));
  }
  await copyFile(join(dir, 'ca.pem'), join(clientDir, 'ca.pem'));
  return {
    clientDir,
    ca: join(dir, 'ca.pem'),
    serverCert: join(dir, 'server.pem'),
    serverKey: join(dir, 'server-key.pem'),
    strangerDir,
  };
}
