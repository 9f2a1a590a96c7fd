import { execFile } from 'node:child_process';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { request } from 'node:http';
import { join } from 'node:path';
import { promisify } from 'node:util';

import { killOnExit, killPid, startProcess, startupError, type ProcessHandle } from './process.js';
import { makeTempDir, registerCleanup } from './tmp.js';
import { waitUntil } from './wait.js';

const run = promisify(execFile);

export interface DockerdOptions {
  /** daemon.json `registry-mirrors`, e.g. ['http://127.0.0.1:5000']. */
  registryMirrors?: string[];
  /** daemon.json `insecure-registries`; 127.0.0.0/8 is plain HTTP already. */
  insecureRegistries?: string[];
  /** Further daemon.json keys, e.g. { 'max-concurrent-downloads': 6 }. */
  daemonConfig?: Record<string, unknown>;
  /** Also listen on 127.0.0.1:PORT with TLS, client certificates required (`--tlsverify`). */
  tls?: { port: number; ca: string; cert: string; key: string };
}

export interface DockerOptions {
  /** Milliseconds before the CLI is killed (default 120 000). */
  timeoutMs?: number;
  env?: NodeJS.ProcessEnv;
}

export interface Dockerd {
  /** The engine API socket. */
  socketPath: string;
  /** unix://<socketPath>, for DOCKER_HOST or --engine. */
  host: string;
  /** The containerd that this dockerd started (for `ctr -a`). */
  containerdSocket: string;
  dir: string;
  dataRoot: string;
  execRoot: string;
  /** DOCKER_CONFIG for the CLI, so tests never read or write ~/.docker. */
  dockerConfig: string;
  process: ProcessHandle;
  /** Runs the docker CLI against this daemon and returns its stdout. */
  docker(args: string[], options?: DockerOptions): Promise<string>;
  logTail(lines?: number): Promise<string>;
  /** Stops dockerd and makes sure its containerd is gone too. Idempotent. */
  stop(): Promise<void>;
}

/**
 * Starts a private dockerd (vfs storage, no iptables, no bridge) with its own data and
 * exec roots, so its containerd socket and state never meet another daemon's.
 */
export async function startDockerd(options: DockerdOptions = {}): Promise<Dockerd> {
  // A unix socket path must fit in 108 bytes; the deepest one is containerd's ttrpc
  // socket under the exec root, so a long TMPDIR falls back to /tmp.
  const dir = await makeTempDir('dockerd');
  const base = dir.length > 60 ? await makeShortDir() : dir;
  const dataRoot = join(base, 'd');
  const execRoot = join(base, 'e');
  const dockerConfig = join(dir, 'cli');
  await Promise.all([dataRoot, execRoot, dockerConfig].map((p) => mkdir(p, { recursive: true })));

  const socketPath = join(dataRoot, 'docker.sock');
  const configFile = join(dir, 'daemon.json');
  const daemonJson: Record<string, unknown> = { ...options.daemonConfig };
  if (options.registryMirrors) daemonJson['registry-mirrors'] = options.registryMirrors;
  if (options.insecureRegistries) daemonJson['insecure-registries'] = options.insecureRegistries;
  await writeFile(configFile, JSON.stringify(daemonJson, null, 2));

  const proc = await startProcess({
    name: 'dockerd',
    command: 'dockerd',
    args: [
      '--data-root', dataRoot, '--exec-root', execRoot, '-H', `unix://${socketPath}`,
      '--pidfile', join(dataRoot, 'pid'), '--storage-driver', 'vfs',
      '--iptables=false', '--bridge=none', '--config-file', configFile,
      ...(options.tls
        ? [
            '-H', `tcp://127.0.0.1:${options.tls.port}`, '--tlsverify', '--tlscacert', options.tls.ca,
            '--tlscert', options.tls.cert, '--tlskey', options.tls.key,
          ]
        : []),
    ],
    logFile: join(dir, 'dockerd.log'),
  });

  try {
    await waitUntil(async () => (await ping(socketPath)) === 'OK', {
      what: `dockerd on ${socketPath}`,
      timeoutMs: 40_000,
      intervalMs: 100,
      abort: () => proc.exit() && new Error('dockerd exited'),
    });
  } catch (err) {
    const error = await startupError(proc, `not ready: ${(err as Error).message}`);
    await proc.stop();
    throw error;
  }

  // containerd runs in its own process group, so stopping dockerd's group misses it
  // if dockerd dies without shutting it down; remember its pid to finish the job.
  const containerdDir = join(execRoot, 'containerd');
  const containerdPid = Number(await readFile(join(containerdDir, 'containerd.pid'), 'utf8')
    .catch(() => '0'));
  const forget = containerdPid > 0 ? killOnExit(containerdPid) : () => undefined;

  const env: NodeJS.ProcessEnv = {
    ...process.env, DOCKER_HOST: `unix://${socketPath}`, DOCKER_CONFIG: dockerConfig,
  };
  // Either would point the CLI at some other daemon than ours.
  delete env.DOCKER_CONTEXT;
  delete env.DOCKER_TLS_VERIFY;

  let stopping: Promise<void> | undefined;
  const stop = async () => {
    await proc.stop(20_000);
    if (containerdPid > 0 && (await isOurContainerd(containerdPid, containerdDir))) {
      killPid(containerdPid, 'SIGTERM');
      await waitUntil(async () => !(await isOurContainerd(containerdPid, containerdDir)), {
        what: `containerd ${containerdPid} to exit`, timeoutMs: 5_000,
      }).catch(() => killPid(containerdPid, 'SIGKILL'));
    }
    forget();
    await unmountUnder(base);
  };

  return {
    socketPath,
    host: `unix://${socketPath}`,
    containerdSocket: join(containerdDir, 'containerd.sock'),
    dir,
    dataRoot,
    execRoot,
    dockerConfig,
    process: proc,
    docker: (args, opts = {}) => docker(args, { ...env, ...opts.env }, opts.timeoutMs),
    logTail: (lines) => proc.logTail(lines),
    stop: () => (stopping ??= stop()),
  };
}

async function docker(args: string[], env: NodeJS.ProcessEnv, timeoutMs = 120_000) {
  try {
    const { stdout } = await run('docker', args, {
      env, timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024,
    });
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`docker ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

function ping(socketPath: string): Promise<string> {
  return new Promise((resolve, reject) => {
    const req = request({ socketPath, path: '/_ping', timeout: 2_000 }, (res) => {
      let body = '';
      res.setEncoding('utf8');
      res.on('data', (chunk: string) => (body += chunk));
      res.on('end', () => resolve(body));
    });
    req.on('timeout', () => req.destroy(new Error('ping timed out')));
    req.on('error', reject);
    req.end();
  });
}

/**
 * Guards against pid reuse: only a containerd started with our exec root is killed.
 * A zombie has an empty cmdline, so it counts as gone.
 */
async function isOurContainerd(pid: number, containerdDir: string): Promise<boolean> {
  const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
  return cmdline.includes(containerdDir);
}

/**
 * dockerd bind-mounts its data root onto itself (to make mount propagation private)
 * and undoes it only on a clean shutdown; after a crash or SIGKILL the mount stays
 * and the temp folder cannot be removed. Lazily unmounts whatever is left under `dir`.
 */
async function unmountUnder(dir: string): Promise<void> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const points = mountinfo.split('\n')
    .map((line) => line.split(' ')[4] ?? '')
    .filter((point) => point === dir || point.startsWith(`${dir}/`))
    .sort((a, b) => b.length - a.length);
  for (const point of points) await run('umount', ['-l', point]).catch(() => undefined);
}

async function makeShortDir(): Promise<string> {
  const dir = await mkdtemp('/tmp/wd-');
  registerCleanup(() => rm(dir, { recursive: true, force: true }));
  return dir;
}
