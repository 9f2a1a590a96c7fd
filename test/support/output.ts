import { PassThrough } from 'node:stream';

/** Standard output and error for a command run in this process, and what each got so far. */
export interface CapturedOutput {
  stdout: PassThrough;
  stderr: PassThrough;
  out: string;
  err: string;
}

export function captureOutput(): CapturedOutput {
  const io: CapturedOutput = { stdout: new PassThrough(), stderr: new PassThrough(), out: '', err: '' };
  io.stdout.on('data', (c: Buffer) => (io.out += c.toString()));
  io.stderr.on('data', (c: Buffer) => (io.err += c.toString()));
  return io;
}
