import { readFile } from 'node:fs/promises';
import { parse as parseYaml } from 'yaml';
import type { z } from 'zod';
import { WharfError } from '../errors.js';

/** Reads a YAML config file; a missing file or bad YAML is a config error naming the file. */
export async function readYamlFile(path: string): Promise<unknown> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (err) {
    throw new WharfError('WHARF_CONFIG_INVALID', `cannot read config file ${path}`, {
      cause: err,
      hint: 'check the path given to --config',
    });
  }
  try {
    // Without prettyErrors the message quotes no source line: that line may hold a password.
    return parseYaml(text, { prettyErrors: false }) ?? {};
  } catch (err) {
    const at = (err as { pos?: [number, number] }).pos?.[0];
    const where = at === undefined ? '' : ` at line ${text.slice(0, at).split('\n').length}`;
    throw new WharfError(
      'WHARF_CONFIG_INVALID',
      `${path} is not valid YAML${where}: ${(err as Error).message}`,
      { hint: 'fix the YAML syntax at that line; quote values that contain : or #' },
    );
  }
}

/**
 * Checks a document against a schema. The error names the exact key (`upstreams.0.pasword`):
 * an unknown key is refused rather than ignored, since a misspelt option silently doing
 * nothing is worse than a failed start.
 */
export function validateDocument<T>(
  schema: z.ZodType<T>,
  doc: unknown,
  source: string,
  unknownKeyHint: string,
): T {
  const result = schema.safeParse(doc ?? {});
  if (result.success) return result.data;
  const issue = result.error.issues[0]!;
  const keys = issue.code === 'unrecognized_keys' ? issue.keys : [];
  if (keys.length) {
    const path = [...issue.path, keys[0]].join('.');
    throw new WharfError('WHARF_CONFIG_INVALID', `${source}: ${path}: unknown key`, {
      hint: unknownKeyHint,
    });
  }
  const where = issue.path.length ? issue.path.join('.') : '(top level)';
  throw new WharfError('WHARF_CONFIG_INVALID', `${source}: ${where}: ${issue.message}`);
}
