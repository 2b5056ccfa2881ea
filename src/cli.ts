// `ventros <command>`: start, migrate, simulate, --help. Exit codes: 0 ok, 1 runtime failure,
// 2 bad usage or configuration (and 130 for a simulation stopped with Ctrl-C).
import { parseArgs, type ParseArgsConfig } from 'node:util';
import { ConfigError, loadConfig } from './config.ts';
import { migrate } from './db/migrate.ts';
import { openDatabase, startVentros, type Role } from './main.ts';
import { makeLogger } from './observability/logger.ts';

const HELP = `ventros — WhatsApp-first CRM backend

Usage:
  ventros start [--role all|api|worker]   run the service (default role: all)
  ventros migrate                         apply database migrations and exit
  ventros simulate waha --channel <id> [--token <t>] [--hmac-key <k>] [--rate <n/s>] [--duration <s>]
                        [--url <base>] [--contacts <n>] [--timeout <s>] [--messages-only]
                                          post realistic WAHA webhooks at a steady rate; the
                                          channel's token from --token, else VENTROS_API_KEY
                                          (a manager's key), else DATABASE_URL
                                          (ventros simulate waha --help for every option)
  ventros --help                          this text (also: ventros <command> --help)

Roles: all = API + worker in one process (the only role on the embedded database);
       api = HTTP only; worker = inbound processor, consumers, relay, dispatchers, timers
       (and over HTTP only /health/* and /metrics).
Configuration comes from the environment; see the README's configuration table.
Exit codes: 0 ok, 1 runtime failure, 2 bad usage or configuration.`;

/** Each command's usage line, printed with a usage error. */
const USAGE: Record<string, string> = {
  start: 'usage: ventros start [--role all|api|worker]   (ventros --help for more)',
  migrate: 'usage: ventros migrate   (ventros --help for more)',
};

/** Bad usage: printed as one line and the command's usage, exit code 2, no stack. */
class UsageError extends Error {}

/**
 * parseArgs, with what it refuses (an unknown option, a missing value, a stray argument) turned
 * into a UsageError that says it in a few words.
 */
function parseCommand<O extends ParseArgsConfig['options']>(args: string[], options: O) {
  try {
    return parseArgs({ args, options, strict: true, allowPositionals: false });
  } catch (err) {
    throw new UsageError(describeParseError(err));
  }
}

function describeParseError(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  const message = err instanceof Error ? err.message : String(err);
  const named = /'(-[^' ]*)/.exec(message)?.[1];
  const arg = /'([^']*)'/.exec(message)?.[1];
  switch (code) {
    case 'ERR_PARSE_ARGS_UNKNOWN_OPTION':
      return `unknown option "${named ?? arg ?? message}"`;
    case 'ERR_PARSE_ARGS_UNEXPECTED_POSITIONAL':
      return `unexpected argument "${arg ?? message}"`;
    case 'ERR_PARSE_ARGS_INVALID_OPTION_VALUE':
      if (named && /argument missing/.test(message)) return `${named} needs a value`;
      if (named && /ambiguous/.test(message)) return `${named} needs a value (one starting with "-" is given as ${named}=<value>)`;
      return message.split('\n')[0];
    default:
      return message.split('\n')[0];
  }
}

export async function runCli(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  if (!command || command === '--help' || command === '-h' || command === 'help') {
    console.log(HELP);
    return command ? 0 : 2;
  }
  try {
    switch (command) {
      case 'start':
        return await start(rest);
      case 'migrate':
        return await runMigrate(rest);
      case 'simulate': {
        const { runSimulate } = await import('./inbound/simulate.ts');
        return await runSimulate(rest);
      }
      default:
        console.error(`unknown command "${command}"\n\n${HELP}`);
        return 2;
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`ventros ${command}: ${err.message}\n${USAGE[command] ?? ''}`);
      return 2;
    }
    if (err instanceof ConfigError) {
      console.error(`configuration error: ${err.message}`);
      return 2;
    }
    console.error(err instanceof Error ? (err.stack ?? err.message) : String(err));
    return 1;
  }
}

async function start(args: string[]): Promise<number> {
  const { values } = parseCommand(args, { role: { type: 'string', default: 'all' }, help: { type: 'boolean', short: 'h' } });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  if (!['all', 'api', 'worker'].includes(values.role!)) throw new UsageError(`--role must be all, api or worker (got "${values.role}")`);
  const config = loadConfig(process.env, { service: true });
  const logger = makeLogger(config.logLevel, { role: values.role });
  const running = await startVentros({ config, role: values.role as Role, logger });
  await new Promise<void>((resolve) => {
    const onSignal = (signal: string) => {
      logger.info({ signal }, 'shutting down');
      const force = setTimeout(() => {
        logger.error('shutdown took too long; exiting');
        process.exit(1);
      }, config.shutdownTimeoutMs + 5000);
      force.unref();
      running.stop().then(resolve, (err) => {
        logger.error({ err }, 'shutdown failed');
        resolve();
      });
    };
    process.once('SIGTERM', onSignal);
    process.once('SIGINT', onSignal);
  });
  return 0;
}

async function runMigrate(args: string[]): Promise<number> {
  const { values } = parseCommand(args, { help: { type: 'boolean', short: 'h' } });
  if (values.help) {
    console.log(HELP);
    return 0;
  }
  const config = loadConfig();
  const db = await openDatabase(config);
  try {
    const applied = await migrate(db);
    console.log(applied.length ? `applied: ${applied.join(', ')}` : 'database is up to date');
    return 0;
  } finally {
    await db.close();
  }
}
