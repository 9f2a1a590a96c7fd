import { mkdir, readFile, rename, writeFile } from 'node:fs/promises';
import { dirname } from 'node:path';
import { WharfError } from '../errors.js';

/** What wharf knows of one image that the engine does not record. Times are ms since epoch. */
export interface ImageUsage {
  /** When wharf first saw the image on the engine. */
  firstSeen: number;
  /** When wharf last saw a running container use it. */
  lastUsed?: number;
  /** When wharf pulled it. */
  pulledAt?: number;
}

interface StateFile {
  version: 1;
  images: Record<string, ImageUsage>;
}

/**
 * The engine tracks neither when an image was pulled nor when it was last used, and pruning
 * needs both: "newest N versions" and "unused for a week". wharf notes them itself in a small
 * JSON file, written to a temp file and renamed so a crash never leaves half of it.
 */
export class UsageState {
  private constructor(
    private readonly path: string,
    private readonly images: Map<string, ImageUsage>,
  ) {}

  static async load(path: string): Promise<UsageState> {
    let images = new Map<string, ImageUsage>();
    try {
      const doc = JSON.parse(await readFile(path, 'utf8')) as Partial<StateFile>;
      if (doc.version === 1 && doc.images && typeof doc.images === 'object') {
        images = new Map(Object.entries(doc.images));
      }
    } catch {
      // Missing or unreadable: start afresh. The worst outcome is that images look newly
      // seen, which only delays their removal.
    }
    return new UsageState(path, images);
  }

  get(id: string): ImageUsage | undefined {
    return this.images.get(id);
  }

  /** Records the images present now; forgets those that are gone. */
  observe(present: Iterable<string>, inUse: ReadonlySet<string>, now = Date.now()): void {
    const seen = new Set<string>();
    for (const id of present) {
      seen.add(id);
      const entry = this.images.get(id) ?? { firstSeen: now };
      if (inUse.has(id)) entry.lastUsed = now;
      this.images.set(id, entry);
    }
    for (const id of [...this.images.keys()]) if (!seen.has(id)) this.images.delete(id);
  }

  pulled(id: string, now = Date.now()): void {
    const entry = this.images.get(id) ?? { firstSeen: now };
    entry.pulledAt = now;
    this.images.set(id, entry);
  }

  /** The last time the image was known to be wanted: used, pulled, or first seen. */
  lastWanted(id: string): number {
    const e = this.images.get(id);
    if (!e) return Date.now();
    return Math.max(e.firstSeen, e.lastUsed ?? 0, e.pulledAt ?? 0);
  }

  async save(): Promise<void> {
    const doc: StateFile = { version: 1, images: Object.fromEntries(this.images) };
    const tmp = `${this.path}.${process.pid}.tmp`;
    try {
      await mkdir(dirname(this.path), { recursive: true });
      await writeFile(tmp, JSON.stringify(doc, null, 1));
      await rename(tmp, this.path);
    } catch (err) {
      throw new WharfError('WHARF_STATE_UNWRITABLE', `cannot write warm state to ${this.path}`, {
        cause: err,
        hint: 'set state: in the warm config to a writable file',
      });
    }
  }
}
