import { execFile } from 'node:child_process';
import { promisify } from 'node:util';

const run = promisify(execFile);

/**
 * Runs `skopeo copy SRC DST` for loopback registries (TLS verification off both ways)
 * and returns its stdout. Note skopeo may rewrite manifests (see pushLayout).
 */
export async function skopeoCopy(
  src: string,
  dst: string,
  extraArgs: string[] = [],
): Promise<string> {
  const args = ['copy', ...tlsFlags(src, 'src'), ...tlsFlags(dst, 'dest'), ...extraArgs, src, dst];
  try {
    const { stdout } = await run('skopeo', args, { maxBuffer: 64 * 1024 * 1024 });
    return stdout;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`skopeo ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

/** `skopeo inspect --raw` of an image: its manifest's exact bytes. */
export async function skopeoInspectRaw(ref: string): Promise<Buffer> {
  const args = ['inspect', '--raw', ...tlsFlags(ref, 'src', 'tls-verify'), ref];
  const { stdout } = await run('skopeo', args, { encoding: 'buffer', maxBuffer: 1 << 26 });
  return stdout;
}

/** `skopeo list-tags` of a repository (`docker://HOST/REPO`): its tags, as skopeo collected them. */
export async function skopeoListTags(repo: string): Promise<string[]> {
  const args = ['list-tags', ...tlsFlags(repo, 'src', 'tls-verify'), repo];
  try {
    const { stdout } = await run('skopeo', args, { maxBuffer: 1 << 24 });
    return (JSON.parse(stdout) as { Tags: string[] }).Tags;
  } catch (err) {
    const e = err as Error & { stderr?: string };
    throw new Error(`skopeo ${args.join(' ')} failed: ${e.stderr?.trim() || e.message}`);
  }
}

function tlsFlags(ref: string, side: 'src' | 'dest', flag = `${side}-tls-verify`): string[] {
  return ref.startsWith('docker://') ? [`--${flag}=false`] : [];
}
