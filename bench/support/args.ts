export interface BenchArgs {
  /** Benchmarks to run, in the order given; every one when none is named. */
  names: string[];
  /** Smaller sizes and fewer rounds, to try things out in a minute or two. */
  quick: boolean;
  /** Where the JSON goes (default .bench/results.json). */
  out: string;
  help: boolean;
}

export class UsageError extends Error {}

export const USAGE = `usage: npm run bench -- [NAME ...] [--quick] [--out FILE]

  NAME      run only these benchmarks (default: all of them)
  --quick   smaller images and fewer rounds, to try things out
  --out     where to write the JSON results (default .bench/results.json)`;

/** Parses `bench/run.ts` arguments; a name must be one of `known`. */
export function parseArgs(argv: string[], known: string[]): BenchArgs {
  const args: BenchArgs = { names: [], quick: false, out: '.bench/results.json', help: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!;
    if (arg === '--quick') args.quick = true;
    else if (arg === '--help' || arg === '-h') args.help = true;
    else if (arg === '--out') {
      const value = argv[++i];
      if (!value) throw new UsageError('--out needs a file name');
      args.out = value;
    } else if (arg.startsWith('-')) {
      throw new UsageError(`unknown option ${arg}`);
    } else if (!known.includes(arg)) {
      throw new UsageError(`unknown benchmark ${arg}; there are: ${known.join(', ')}`);
    } else if (!args.names.includes(arg)) {
      args.names.push(arg);
    }
  }
  if (args.names.length === 0) args.names = [...known];
  return args;
}
