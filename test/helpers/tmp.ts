import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

type CleanupFn = () => unknown | Promise<unknown>;

// LIFO: a temp folder is registered before the process that lives in it, so the
// process is stopped before its folder is removed.
const cleanups: CleanupFn[] = [];

/** Registers work for `cleanupAll()`; returns a function that unregisters it. */
export function registerCleanup(fn: CleanupFn): () => void {
  cleanups.push(fn);
  return () => {
    const i = cleanups.lastIndexOf(fn);
    if (i >= 0) cleanups.splice(i, 1);
  };
}

/**
 * Runs every registered cleanup, newest first, and empties the registry.
 * All of them run even when some fail; the first failure is rethrown afterwards.
 */
export async function cleanupAll(): Promise<void> {
  const errors: unknown[] = [];
  while (cleanups.length > 0) {
    const fn = cleanups.pop()!;
    try {
      await fn();
    } catch (err) {
      errors.push(err);
    }
  }
  if (errors.length > 0) throw errors[0];
}

/**
 * A fresh folder under os.tmpdir(), removed by `cleanupAll()` unless WHARF_KEEP_TMP=1
 * (keeping it is how one reads a failed test's registry or dockerd logs).
 */
export async function makeTempDir(prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), `wharf-${prefix}-`));
  registerCleanup(async () => {
    if (process.env.WHARF_KEEP_TMP === '1') return;
    await rm(dir, { recursive: true, force: true, maxRetries: 3 });
  });
  return dir;
}

// Ports handed out recently: the OS may give the same ephemeral port to two quick
// callers once the probe socket is closed, before either program has bound it.
const issued = new Set<number>();

/** A TCP port on 127.0.0.1 that was free a moment ago. */
export async function freePort(): Promise<number> {
  for (let attempt = 0; attempt < 20; attempt++) {
    const port = await probePort();
    if (issued.has(port)) continue;
    issued.add(port);
    return port;
  }
  throw new Error('freePort: no unused loopback port after 20 attempts');
}

function probePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = createServer();
    server.unref();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const address = server.address();
      const port = typeof address === 'object' && address ? address.port : 0;
      server.close(() => resolve(port));
    });
  });
}
