import type { Logger } from '../log.js';
import { isUnavailable } from '../upstream/client.js';
import { WharfError } from '../errors.js';
import type { MirrorMetrics } from './metrics.js';

/**
 * Remembers which upstreams answered last time, so that an upstream going down and coming back
 * is one warn line each, not one per request.
 */
export class UpstreamHealth {
  private readonly down = new Set<string>();

  constructor(
    private readonly logger: Logger,
    private readonly metrics: MirrorMetrics,
  ) {}

  ok(upstream: string): void {
    if (this.down.delete(upstream)) this.logger.warn({ upstream }, 'upstream is back');
  }

  failed(upstream: string, err: unknown): void {
    const code = err instanceof WharfError ? err.code : 'WHARF_INTERNAL';
    this.metrics.upstreamErrors.inc({ upstream, code });
    if (!isUnavailable(err) || this.down.has(upstream)) return;
    this.down.add(upstream);
    this.logger.warn({ upstream, err: (err as Error).message }, 'upstream is down');
  }
}
