import { availableParallelism, loadavg } from 'node:os';
import { resolve } from 'node:path';

import { cleanupAll } from '../test/helpers/tmp.js';
import { benchEnsure } from './ensure.js';
import { benchGc } from './gc.js';
import { benchMirror } from './mirror.js';
import { parseArgs, USAGE, UsageError } from './support/args.js';
import { describeEnvironment } from './support/environment.js';
import {
  busyWarning, formatEnvironment, formatResult, writeJson, type BenchResult, type RunRecord,
} from './support/report.js';

interface BenchOptions {
  quick: boolean;
}

type Bench = (options: BenchOptions) => Promise<BenchResult | undefined>;

const BENCHMARKS: Record<string, Bench> = {
  mirror: benchMirror,
  gc: benchGc,
  ensure: benchEnsure,
};

/** Anything a benchmark returns is checked before it is formatted as a result. */
function isBenchResult(value: unknown): value is BenchResult {
  const v = value as Partial<BenchResult> | undefined;
  return typeof v?.name === 'string' && Array.isArray(v.sections) && Array.isArray(v.checks);
}

async function main(): Promise<number> {
  let args;
  try {
    args = parseArgs(process.argv.slice(2), Object.keys(BENCHMARKS));
  } catch (err) {
    if (!(err instanceof UsageError)) throw err;
    console.error(`${err.message}\n${USAGE}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }

  const environment = await describeEnvironment(args.quick);
  console.log(formatEnvironment(environment));
  const record: RunRecord = {
    startedAt: new Date().toISOString(),
    finishedAt: '',
    environment,
    loadAverageEnd: [],
    results: {},
    failures: {},
  };

  for (const name of args.names) {
    console.log('');
    process.stderr.write(`running ${name}...\n`);
    try {
      const result: unknown = await BENCHMARKS[name]!({ quick: args.quick });
      if (isBenchResult(result)) console.log(formatResult(result));
      else if (result !== undefined) console.log(`== ${name}\n${JSON.stringify(result, null, 2)}`);
      if (result !== undefined) record.results[name] = result;
    } catch (err) {
      // One broken benchmark should not cost the figures of the others.
      const message = (err as Error).stack ?? String(err);
      console.log(`== ${name}: FAILED\n${message}`);
      record.failures[name] = (err as Error).message;
    } finally {
      // Registries, mirrors, clients and gigabytes of temp folders go before the next one.
      await cleanupAll().catch((err: Error) => console.error(`cleanup: ${err.message}`));
    }
  }

  record.finishedAt = new Date().toISOString();
  record.loadAverageEnd = loadavg().map((n) => Math.round(n * 100) / 100);
  console.log(`\nload at the end: ${record.loadAverageEnd.join(' ')}`);
  if ((record.loadAverageEnd[0] ?? 0) >= availableParallelism() + 1) {
    // The run's own processes load the machine too, hence the one core of slack.
    console.log(busyWarning(record.loadAverageEnd));
  }
  const out = resolve(args.out);
  await writeJson(out, record);
  console.log(`\nresults written to ${out}`);
  return Object.keys(record.failures).length > 0 ? 1 : 0;
}

// Ctrl-C mid-run still stops the registries and removes the temp folders.
process.once('SIGINT', () => {
  void cleanupAll().finally(() => process.exit(130));
});

// Exit explicitly: a keep-alive socket left in some client pool must not hold the run open.
process.exit(await main());
