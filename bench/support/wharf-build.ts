import { execFile } from 'node:child_process';
import { access } from 'node:fs/promises';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';

const run = promisify(execFile);

export const ROOT = fileURLToPath(new URL('../../', import.meta.url));

/**
 * Builds dist/ from the current sources, since `bin/wharf.js` runs what is there. Others edit
 * the tree while benchmarks run; if the build fails on a half-made change, the last dist/ is
 * used and the returned note says so, rather than losing the whole run.
 */
export async function buildWharf(): Promise<string | undefined> {
  try {
    await run(process.execPath, ['node_modules/typescript/bin/tsc', '-p', 'tsconfig.build.json'], {
      cwd: ROOT,
      maxBuffer: 16 * 1024 * 1024,
    });
    return undefined;
  } catch (err) {
    const e = err as Error & { stdout?: string };
    const first = (e.stdout ?? e.message).split('\n')[0];
    try {
      await access(`${ROOT}dist/cli/main.js`);
    } catch {
      throw new Error(`npm run build failed and there is no dist/: ${first}`);
    }
    return `build failed (${first}); benchmarked the existing dist/`;
  }
}
