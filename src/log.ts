import { pino, type Logger } from 'pino';

export type { Logger };

/**
 * Paths pino censors wherever they appear in a log object. Upstream URLs never carry
 * credentials (they are configured separately), and errors are built without headers, so this
 * is the last line of defence rather than the only one.
 */
const REDACT = [
  'authorization',
  'Authorization',
  'password',
  'token',
  'auth',
  'identitytoken',
  '*.authorization',
  '*.Authorization',
  '*.password',
  '*.token',
  '*.auth',
  'headers.authorization',
  'req.headers.authorization',
  'credentials',
  '*.credentials',
];

export interface LogOptions {
  level?: string;
  /** Where lines go; stderr by default so stdout stays for results. */
  destination?: NodeJS.WritableStream;
}

export function createLogger(options: LogOptions = {}): Logger {
  const level = options.level ?? process.env.WHARF_LOG_LEVEL ?? 'info';
  return pino(
    { level, redact: { paths: REDACT, censor: '[redacted]' }, base: undefined },
    (options.destination ?? process.stderr) as pino.DestinationStream,
  );
}

export function silentLogger(): Logger {
  return pino({ level: 'silent' });
}
