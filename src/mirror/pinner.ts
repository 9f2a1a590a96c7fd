import { WharfError } from '../errors.js';
import type { Logger } from '../log.js';
import { children, parseManifest, type Descriptor } from '../oci/manifest.js';
import { formatPlatform, parsePlatform } from '../oci/platform.js';
import type { IndexDb } from '../store/index-db.js';
import type { PinSpec, UpstreamConfig } from './config.js';
import type { Mirror } from './mirror.js';
import type { Router } from './routing.js';

const BLOB_CONCURRENCY = 4;

/** `os/arch[/variant]` of an index entry, as pins name platforms. */
function platformOf(d: Descriptor): string {
  const p = d.platform;
  if (!p) return 'unknown';
  return [p.os, p.architecture, p.variant].filter(Boolean).join('/');
}

/**
 * A platform of a pin as `os/arch[/variant]`, normalised (x86_64 is amd64); anything else is
 * refused, since an entry no index has would keep nothing and say nothing.
 */
export function pinPlatform(input: string, option: string): string {
  const spec = parsePlatform(input, option);
  if (spec.osVersion !== undefined) {
    throw new WharfError('WHARF_BAD_USAGE', `${option}: a pin keeps platforms as os/arch[/variant], without an os.version`, {
      hint: `write ${formatPlatform({ ...spec, osVersion: undefined })}; the pin keeps every Windows build of it`,
    });
  }
  return formatPlatform(spec);
}

function wanted(d: Descriptor, platforms: string[] | undefined): boolean {
  if (!platforms?.length) return true;
  const have = platformOf(d);
  return platforms.some((p) => have === p || have.startsWith(`${p}/`));
}

/**
 * Keeps pinned images in the store: resolves each pin through the mirror (so a tag that moved
 * is noticed within tagTtl), fetches what is missing, and records the digests it holds so
 * eviction never takes them. Pins come from the config file and from `wharf cache pin`.
 */
export class Pinner {
  private timer: NodeJS.Timeout | undefined;
  private running: Promise<void> | undefined;
  private stopped = false;

  constructor(
    private readonly mirror: Mirror,
    private readonly router: Router,
    private readonly index: IndexDb,
    private readonly logger: Logger,
  ) {}

  /** Records the config file's pins, replacing those an earlier config had. */
  syncConfigPins(pins: PinSpec[]): void {
    const checked = pins.map((pin, i) => {
      try {
        this.router.forImage(pin.image);
        const platforms = pin.platforms?.map((p) => pinPlatform(p, `cache.pin.${i}.platforms`));
        return { image: pin.image, platforms };
      } catch (err) {
        throw new WharfError('WHARF_CONFIG_INVALID', `cache.pin: ${(err as Error).message}`, {
          hint: (err as WharfError).hint,
        });
      }
    });
    const keep = new Set(pins.map((p) => p.image));
    for (const row of this.index.listPins()) {
      if (row.origin === 'config' && !keep.has(row.image)) this.index.removePin(row.image);
    }
    for (const pin of checked) this.index.addPin(pin.image, pin.platforms, 'config');
  }

  /**
   * Refreshes now, then twice per `tagTtlMs`. A refresh asks the upstream only about tags
   * confirmed more than `tagTtlMs` ago (the mirror's own rule); ticking at the TTL itself would
   * find them confirmed a moment too recently and leave a moved tag unseen for a second TTL.
   */
  start(tagTtlMs: number): void {
    void this.refresh();
    this.timer = setInterval(() => void this.refresh(), Math.max(tagTtlMs / 2, 1000));
    this.timer.unref();
  }

  /** Stops refreshing; a refresh under way finishes the blob it is on and goes no further. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    await this.running;
  }

  /** One pass over every pin; a pass already running is joined, not doubled. */
  refresh(): Promise<void> {
    this.running ??= this.refreshAll().finally(() => {
      this.running = undefined;
    });
    return this.running;
  }

  private async refreshAll(): Promise<void> {
    for (const pin of this.index.listPins()) {
      if (this.stopped) return;
      const platforms = pin.platforms ? (JSON.parse(pin.platforms) as string[]) : undefined;
      try {
        const { upstream, repo, held } = await this.resolve(pin.image, platforms);
        // Pinned before they are fetched, so an eviction meanwhile cannot take them; the old
        // version stays pinned until the new one is complete.
        const before = this.index.pinnedDigestsOf(pin.image);
        this.index.setPinnedBlobs(pin.image, [...before, ...held]);
        await this.fetchAll(upstream, repo, [...held]);
        this.index.setPinnedBlobs(pin.image, held);
        this.logger.debug({ image: pin.image, blobs: held.size }, 'pin refreshed');
      } catch (err) {
        // What the pin held stays pinned: an upstream outage must not make it evictable.
        this.logger.warn({ image: pin.image, err: (err as Error).message }, 'pin refresh failed');
      }
    }
    this.mirror.cache.refreshMetrics();
  }

  /** The manifests of a pinned image (fetched now) and every digest it consists of. */
  private async resolve(image: string, platforms: string[] | undefined) {
    const { upstream, repo, ref } = this.router.forImage(image);
    const held = new Set<string>();
    const top = await this.mirror.manifest(upstream, repo, ref);
    held.add(top.digest);
    const parsed = parseManifest(top.body, top.mediaType);
    const manifests =
      parsed.kind === 'index'
        ? await Promise.all(
            parsed.manifests
              .filter((d) => wanted(d, platforms))
              .map(async (d) => {
                const m = await this.mirror.manifest(upstream, repo, { kind: 'digest', digest: d.digest });
                held.add(m.digest);
                return parseManifest(m.body, m.mediaType);
              }),
          )
        : [parsed];
    for (const m of manifests) for (const d of children(m)) held.add(d.digest);
    return { upstream, repo, held };
  }

  private async fetchAll(upstream: UpstreamConfig, repo: string, digests: string[]): Promise<void> {
    const queue = [...new Set(digests)];
    const worker = async () => {
      for (let d = queue.shift(); d && !this.stopped; d = queue.shift()) {
        await this.mirror.ensureBlob(upstream, repo, d);
      }
    };
    await Promise.all(Array.from({ length: BLOB_CONCURRENCY }, worker));
  }
}
