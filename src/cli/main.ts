import { Command, CommanderError } from 'commander';
import { toWharfError } from '../errors.js';
import { exitCodeFor, printError } from './errors.js';

type Register = (program: Command) => void;

// Each command's code is loaded only when that command runs: `wharf ensure` starts in every
// CI job, and the mirror's modules would add a noticeable share to its run time.
const COMMANDS: Record<string, () => Promise<{ register: Register }>> = {
  serve: () => import('./serve.js'),
  cache: () => import('./cache.js'),
  ensure: () => import('./ensure.js'),
  warm: () => import('./warm.js'),
};

const program = new Command()
  .name('wharf')
  .description('Get container images onto CI machines fast: a pull-through registry mirror, ' +
    'pre-warming of runners, and a digest-checking pull step.')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

/**
 * `wharf help cache ls` becomes `wharf cache help ls`: commander's help command reads one
 * word, so it would show the help of `cache`. Each command's own help command takes the rest.
 */
function nestedHelp(argv: string[]): string[] {
  const [node, script, first, ...words] = argv;
  if (first !== 'help' || words.length < 2) return argv;
  return [node!, script!, ...words.slice(0, -1), 'help', words.at(-1)!];
}

const argv = nestedHelp(process.argv);
const requested = argv[2];
const wanted = requested && requested in COMMANDS ? [requested] : Object.keys(COMMANDS);
for (const name of wanted) (await COMMANDS[name]!()).register(program);

try {
  await program.parseAsync(argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version are "errors" to commander; usage mistakes exit 2 as DESIGN.md says.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  const error = toWharfError(err);
  printError(error);
  process.exit(exitCodeFor(error));
}
