import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startProcess, type ProcessHandle } from '../helpers/process.js';
import { freePort } from '../helpers/tmp.js';
import { waitUntil } from '../helpers/wait.js';
import { get } from './mirror.js';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));

export interface MirrorProcess {
  url: string;
  process: ProcessHandle;
}

/**
 * Runs `wharf serve` as a child process (from the TypeScript sources), for tests that kill it
 * the hard way. Resolves once /healthz answers.
 */
export async function startMirrorProcess(dir: string, args: string[]): Promise<MirrorProcess> {
  const port = await freePort();
  const proc = await startProcess({
    name: 'wharf serve',
    command: process.execPath,
    args: [
      '--import', 'tsx', join(ROOT, 'src/cli/main.ts'), 'serve',
      '--listen', `127.0.0.1:${port}`, ...args,
    ],
    logFile: join(dir, `wharf-${port}.log`),
    cwd: ROOT,
  });
  const url = `http://127.0.0.1:${port}`;
  await waitUntil(async () => (await get(`${url}/healthz`)).status === 200, {
    what: 'wharf serve to answer /healthz',
    timeoutMs: 20_000,
    abort: () => (proc.exit() ? new Error('wharf serve exited during start-up') : undefined),
    details: () => proc.logTail(20),
  });
  return { url, process: proc };
}
