import { join } from 'node:path';

import { startProcess, startupError } from '../../test/helpers/process.js';
import { startRegistry } from '../../test/helpers/registry.js';
import { freePort, makeTempDir } from '../../test/helpers/tmp.js';
import { waitUntil } from '../../test/helpers/wait.js';
import { ROOT } from './wharf-build.js';

/** A pull-through mirror being measured, running as a process of its own. */
export interface MirrorUnderTest {
  label: string;
  /** http://127.0.0.1:PORT */
  url: string;
  /** The process whose memory is watched. */
  pid: number;
  /** How clients of this mirror name a repository of the origin. */
  repoPath(repo: string): string;
  stop(): Promise<void>;
}

/** The upstream NAME wharf is given; clients pull `MIRROR/origin/REPO:TAG`. */
const UPSTREAM_NAME = 'origin';

/**
 * Runs `wharf serve` from dist/ the way a user does, in its own process, so its memory is its
 * own and it competes for the CPU like registry:2 does.
 */
export async function startWharf(upstreamUrl: string): Promise<MirrorUnderTest> {
  const dir = await makeTempDir('bench-wharf');
  for (let attempt = 1; ; attempt++) {
    const port = await freePort();
    const proc = await startProcess({
      name: 'wharf serve',
      command: process.execPath,
      args: [
        join(ROOT, 'bin/wharf.js'), 'serve',
        '--listen', `127.0.0.1:${port}`,
        '--data', join(dir, 'data'),
        '--upstream', `${UPSTREAM_NAME}=${upstreamUrl}`,
        // registry:2 gets the same: a log line per request would cost both of them.
        '--log-level', 'warn',
      ],
      logFile: join(dir, 'wharf.log'),
      cwd: dir,
    });
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitUntil(async () => (await fetch(`${url}/healthz`)).ok, {
        what: `wharf on ${url}`,
        timeoutMs: 20_000,
        abort: () => proc.exit() && new Error('exited'),
      });
    } catch (err) {
      const tail = await proc.logTail(20);
      await proc.stop();
      // The port was free when probed, but another program may have taken it since.
      if (attempt < 3 && tail.includes('EADDRINUSE')) continue;
      throw await startupError(proc, (err as Error).message);
    }
    return {
      label: 'wharf',
      url,
      pid: proc.pid,
      repoPath: (repo) => `${UPSTREAM_NAME}/${repo}`,
      stop: async () => void (await proc.stop()),
    };
  }
}

/** The alternative: CNCF distribution in proxy mode, the `registry:2` pull-through cache. */
export async function startRegistryProxy(upstreamUrl: string): Promise<MirrorUnderTest> {
  const registry = await startRegistry({ proxyRemoteUrl: upstreamUrl, logLevel: 'warn' });
  return {
    label: 'registry:2',
    url: registry.url,
    pid: registry.process.pid,
    // A proxy mirrors one registry, so its paths carry no upstream name.
    repoPath: (repo) => repo,
    stop: () => registry.stop(),
  };
}
