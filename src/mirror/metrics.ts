import { Counter, Gauge, Histogram, Registry } from 'prom-client';

export type RequestKind = 'manifest' | 'blob' | 'blob_head' | 'manifest_head' | 'tags';
export type Outcome =
  | 'hit' | 'miss' | 'coalesced' | 'stale' | 'revalidated' | 'not_found' | 'error';

/** The mirror's Prometheus metrics, in a registry of their own (no global state). */
export class MirrorMetrics {
  readonly registry = new Registry();

  readonly requests = new Counter({
    name: 'wharf_requests_total',
    help: 'Pull API requests by kind and outcome (hit, miss, coalesced, stale, ...)',
    labelNames: ['kind', 'outcome'] as const,
    registers: [this.registry],
  });

  readonly servedBytes = new Counter({
    name: 'wharf_served_bytes_total',
    help: 'Blob bytes sent to clients, by source: the store, or a fetch in flight',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });

  readonly upstreamBytes = new Counter({
    name: 'wharf_upstream_fetched_bytes_total',
    help: 'Bytes fetched from upstreams',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });

  readonly upstreamErrors = new Counter({
    name: 'wharf_upstream_errors_total',
    help: 'Failed upstream requests, by upstream and error code',
    labelNames: ['upstream', 'code'] as const,
    registers: [this.registry],
  });

  readonly staleServed = new Counter({
    name: 'wharf_stale_tags_served_total',
    help: 'Tags served from cache because their upstream could not be asked',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });

  readonly fetchesInFlight = new Gauge({
    name: 'wharf_fetches_in_flight',
    help: 'Blob fetches from upstreams in progress',
    registers: [this.registry],
  });

  readonly fetchFailures = new Counter({
    name: 'wharf_fetch_failures_total',
    help: 'Blob fetches discarded, by reason (digest mismatch, cut off, ...)',
    labelNames: ['reason'] as const,
    registers: [this.registry],
  });

  readonly storeBytes = new Gauge({
    name: 'wharf_store_bytes',
    help: 'Bytes of blobs and manifests in the store',
    registers: [this.registry],
  });

  readonly evictions = new Counter({
    name: 'wharf_evictions_total',
    help: 'Blobs and manifests evicted from the store',
    registers: [this.registry],
  });

  readonly evictedBytes = new Counter({
    name: 'wharf_evicted_bytes_total',
    help: 'Bytes evicted from the store',
    registers: [this.registry],
  });

  readonly passThroughFetches = new Counter({
    name: 'wharf_pass_through_fetches_total',
    help: 'Fetches streamed to clients without being stored (disk full or below its floor)',
    registers: [this.registry],
  });

  readonly pinnedBytes = new Gauge({
    name: 'wharf_pinned_bytes',
    help: 'Bytes of stored blobs held by pins',
    registers: [this.registry],
  });

  readonly requestSeconds = new Histogram({
    name: 'wharf_request_duration_seconds',
    help: 'Time to first byte of pull API responses, by kind',
    labelNames: ['kind'] as const,
    buckets: [0.001, 0.005, 0.02, 0.1, 0.5, 2, 10],
    registers: [this.registry],
  });
}
