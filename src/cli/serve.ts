import type { Command } from 'commander';
import { collect } from './options.js';
import { createLogger } from '../log.js';
import { DEFAULTS, LOG_LEVELS, loadMirrorConfig, type ServeFlags } from '../mirror/config.js';
import { startMirror } from '../mirror/server.js';


export function register(program: Command): void {
  program
    .command('serve')
    .description('run the pull-through registry mirror')
    .option('-c, --config <file>', 'YAML configuration file')
    .option('-l, --listen <host:port>', `address to listen on (default ${DEFAULTS.listen})`)
    .option('-d, --data <dir>', `data folder: blob store and index (default ${DEFAULTS.data})`)
    .option('-u, --upstream <[name=]url>', 'an upstream registry; repeat for several', collect)
    .option('--max-size <size>', 'cache budget, e.g. 200GB; least recently used blobs go first')
    .option('--log-level <level>', `${LOG_LEVELS.join(', ')} (default ${DEFAULTS.logLevel})`)
    .addHelpText(
      'after',
      `
With no upstream given, the public registries are configured: docker.io (the default),
ghcr.io, quay.io, mcr.microsoft.com and registry.k8s.io.

Clients address an upstream by its name as the first path component
(127.0.0.1:5000/registry.example.io/ci/build:v1), by containerd's ?ns= parameter, or get
the default upstream (Docker's registry-mirrors setting).

Examples:
  wharf serve
  wharf serve --listen 0.0.0.0:5000 --upstream https://registry.example.io
  wharf serve --upstream corp=https://registry.corp.example --data /var/lib/wharf
  wharf serve --config /etc/wharf/mirror.yaml`,
    )
    .action(async (flags: ServeFlags) => {
      const config = await loadMirrorConfig(flags);
      const logger = createLogger({ level: config.logLevel });
      const running = await startMirror(config, logger);
      const stop = async (signal: string) => {
        logger.info({ signal }, 'shutting down');
        await running.close();
        process.exit(0);
      };
      process.once('SIGINT', () => void stop('SIGINT'));
      process.once('SIGTERM', () => void stop('SIGTERM'));
    });
}
