import { Command, CommanderError } from 'commander';
import { toWharfError } from '../errors.js';
import { register as registerServe } from './serve.js';
import { register as registerCache } from './cache.js';
import { exitCodeFor, printError } from './errors.js';

const program = new Command()
  .name('wharf')
  .description('Get container images onto CI machines fast: a pull-through registry mirror, ' +
    'pre-warming of runners, and a digest-checking pull step.')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

registerServe(program);
registerCache(program);

try {
  await program.parseAsync(process.argv);
} catch (err) {
  if (err instanceof CommanderError) {
    // Help and version are "errors" to commander; usage mistakes exit 2 as DESIGN.md says.
    process.exit(err.exitCode === 0 ? 0 : 2);
  }
  const error = toWharfError(err);
  printError(error);
  process.exit(exitCodeFor(error));
}
