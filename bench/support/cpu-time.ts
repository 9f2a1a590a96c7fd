import { readFile } from 'node:fs/promises';

/**
 * CPU time (user + system) a process has used so far, in milliseconds, from /proc/PID/stat;
 * undefined where there is no /proc. On a machine shared with the clients and the origin, a
 * mirror's CPU per pull is steadier than its wall time, and says what it takes from them.
 */
export async function cpuMs(pid: number): Promise<number | undefined> {
  let text: string;
  try {
    text = await readFile(`/proc/${pid}/stat`, 'utf8');
  } catch {
    return undefined;
  }
  // The command name, in parentheses, may hold spaces: fields are counted after it.
  const fields = text.slice(text.lastIndexOf(')') + 2).split(' ');
  const ticks = Number(fields[11]) + Number(fields[12]);
  return (ticks * 1000) / CLOCK_TICKS_PER_SECOND;
}

/** USER_HZ, which Linux fixes at 100 for /proc on every architecture it runs on. */
const CLOCK_TICKS_PER_SECOND = 100;

/** The CPU time several processes use between start() and stop(). */
export class CpuMeter {
  private constructor(private readonly pids: number[], private readonly start: (number | undefined)[]) {}

  static async start(pids: number[]): Promise<CpuMeter> {
    return new CpuMeter(pids, await Promise.all(pids.map(cpuMs)));
  }

  /** Milliseconds used by all of them together; undefined if any could not be read. */
  async stop(): Promise<number | undefined> {
    const end = await Promise.all(this.pids.map(cpuMs));
    let total = 0;
    for (const [i, value] of end.entries()) {
      const before = this.start[i];
      if (value === undefined || before === undefined) return undefined;
      total += value - before;
    }
    return total;
  }
}
