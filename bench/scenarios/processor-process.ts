// The inbound processor in a process of its own, as a `worker` process runs it beside an `api`
// process (docs/architecture.md §3): the same database and queues as the bench's Ventros, its own
// event loop and heap. It notes when each message's transaction committed (epoch ms, the same clock
// as the load worker's) and hands those times back when asked to stop.
// Only for PostgreSQL: PGlite is one process's database.
import { fork } from 'node:child_process';
import { performance } from 'node:perf_hooks';
import { fileURLToPath } from 'node:url';
import type { Database } from '../../src/db/database.ts';
import { makeInboundService, type InboundService } from '../../src/services/inbound.service.ts';

/**
 * The inbound service, wrapped to note in `committedAt` when each message's transaction committed
 * (epoch ms): the end of the end-to-end measure, in this process or in a processor's own.
 */
export function timedInboundService(db: Database, committedAt: Map<string, number>): InboundService {
  const real = makeInboundService({ db });
  return {
    async apply(projectId, items) {
      const out = await real.apply(projectId, items);
      const at = performance.timeOrigin + performance.now();
      for (const item of items) for (const e of item.events) if (e.kind === 'message') committedAt.set(e.messageKey, at);
      return out;
    },
  };
}

export type ProcessorProcessConfig = {
  databaseUrl: string;
  /** RabbitMQ at this URL under `namespace`, or the Postgres broker when absent. */
  amqpUrl?: string;
  namespace: string;
  secretKey: string;
};

type FromChild = { ready: true } | { committed: Array<[string, number]> } | { error: string };

export type ProcessorProcess = {
  /** Stops the processor (in-flight batches finish) and returns message key → commit time. */
  stop(): Promise<Map<string, number>>;
  kill(): void;
};

export async function startProcessorProcess(config: ProcessorProcessConfig): Promise<ProcessorProcess> {
  const child = fork(fileURLToPath(import.meta.url), ['--child'], {
    execArgv: ['--import', 'tsx'],
    env: { ...process.env, BENCH_PROCESSOR_CONFIG: JSON.stringify(config) },
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const next = () => new Promise<FromChild>((resolve, reject) => {
    const onExit = (code: number | null) => reject(new Error(`the processor process exited with ${code}`));
    child.once('exit', onExit);
    child.once('message', (m) => {
      child.off('exit', onExit);
      const msg = m as FromChild;
      if ('error' in msg) reject(new Error(`the processor process failed: ${msg.error}`));
      else resolve(msg);
    });
  });
  try {
    await next();
  } catch (err) {
    child.kill('SIGKILL');
    throw err;
  }
  return {
    async stop() {
      const answer = next();
      child.send('stop');
      const m = await answer;
      if (!('committed' in m)) throw new Error('the processor process answered stop with something else');
      return new Map(m.committed);
    },
    kill: () => void (child.exitCode === null && child.kill('SIGKILL')),
  };
}

async function runChild(): Promise<void> {
  const send = (m: FromChild) => new Promise<void>((r) => process.send!(m, undefined, undefined, () => r()));
  // The bench that started it is gone (killed, crashed): so is the reason to run.
  process.once('disconnect', () => process.exit(1));
  try {
    const config = JSON.parse(process.env.BENCH_PROCESSOR_CONFIG ?? '') as ProcessorProcessConfig;
    const { connectPostgres } = await import('../../src/db/postgres.ts');
    const { makeChannelDirectory } = await import('../../src/inbound/channel-directory.ts');
    const { startInboundProcessor } = await import('../../src/inbound/processor.ts');
    const { silentLogger } = await import('../../src/observability/logger.ts');
    const db = connectPostgres({ url: config.databaseUrl, max: 10, applicationName: 'ventros-bench-processor' });
    const broker = config.amqpUrl
      ? await (await import('../../src/broker/rabbitmq.ts')).connectRabbitBroker({ url: config.amqpUrl, db, retryDelaysMs: [1000, 5000], namespace: config.namespace })
      : (await import('../../src/broker/postgres-broker.ts')).makePostgresBroker({ db, retryDelaysMs: [1000, 5000] });
    const committedAt = new Map<string, number>();
    const channels = makeChannelDirectory({ db, secretKey: config.secretKey, defaultSessionTimeoutMinutes: 30, logger: silentLogger });
    const processor = await startInboundProcessor({
      db,
      broker,
      logger: silentLogger,
      channels,
      service: timedInboundService(db, committedAt),
    });
    process.once('message', async () => {
      try {
        await processor.stop();
        await broker.close();
        await db.close();
        await send({ committed: [...committedAt] });
      } catch (err) {
        await send({ error: String((err as Error)?.stack ?? err) });
      }
      process.exit(0);
    });
    await send({ ready: true });
  } catch (err) {
    await send({ error: String((err as Error)?.stack ?? err) });
    process.exit(1);
  }
}

if (process.argv.includes('--child') && process.send) void runChild();
