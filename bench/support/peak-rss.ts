import { readFile, writeFile } from 'node:fs/promises';

/**
 * The peak resident memory of another process over a stretch of time.
 *
 * Linux keeps the peak since process start (VmHWM); writing 5 to /proc/PID/clear_refs resets
 * it to the current RSS, which makes it the exact peak of one phase. Where that is refused,
 * VmRSS sampled every few milliseconds stands in, and may miss a short spike.
 */
export class PeakRss {
  private sampled = 0;
  private readonly timer: NodeJS.Timeout;

  private constructor(private readonly pid: number, private readonly exact: boolean) {
    this.timer = setInterval(() => void this.sample(), 25);
  }

  static async start(pid: number): Promise<PeakRss> {
    const exact = await writeFile(`/proc/${pid}/clear_refs`, '5').then(() => true, () => false);
    const watch = new PeakRss(pid, exact);
    await watch.sample();
    return watch;
  }

  /** Stops watching; the peak in bytes, and whether it is the kernel's exact figure. */
  async stop(): Promise<{ bytes: number; exact: boolean }> {
    clearInterval(this.timer);
    await this.sample();
    const status = await readStatus(this.pid);
    const hwm = this.exact ? status.VmHWM ?? 0 : 0;
    return { bytes: Math.max(hwm, this.sampled), exact: this.exact };
  }

  private async sample(): Promise<void> {
    const status = await readStatus(this.pid).catch(() => ({} as Status));
    this.sampled = Math.max(this.sampled, status.VmRSS ?? 0);
  }
}

type Status = Partial<Record<'VmRSS' | 'VmHWM', number>>;

/** The memory lines of /proc/PID/status, in bytes. */
async function readStatus(pid: number): Promise<Status> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8');
  const status: Status = {};
  for (const m of text.matchAll(/^(VmRSS|VmHWM):\s+(\d+) kB$/gm)) {
    status[m[1] as keyof Status] = Number(m[2]) * 1024;
  }
  return status;
}
