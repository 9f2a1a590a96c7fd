import type { WharfError } from '../errors.js';

/** Exit status: 2 for bad usage (flags, config), 1 for everything else that failed. */
export function exitCodeFor(err: WharfError): number {
  return err.code === 'WHARF_BAD_USAGE' || err.code === 'WHARF_CONFIG_INVALID' ? 2 : 1;
}

export function printError(err: WharfError, out: NodeJS.WritableStream = process.stderr): void {
  out.write(`error: ${err.message} [${err.code}]\n`);
  if (err.hint) out.write(`hint: ${err.hint}\n`);
}
