// What the ingress and inbound scenarios share: Ventros serving HTTP on 127.0.0.1 over the bench
// environment's database and broker, one WAHA channel, and — for runs that need several processor
// instances — more connections to the same database and the same RabbitMQ queues.
import { randomBytes } from 'node:crypto';
import type { Broker } from '../../src/broker/broker.ts';
import amqp from 'amqplib';
import { workQueueName } from '../../src/broker/rabbitmq-topology.ts';
import { Queues } from '../../src/broker/topology.ts';
import { loadConfig } from '../../src/config.ts';
import type { Database } from '../../src/db/database.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { startVentros, type Running } from '../../src/main.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { makeChannelsService } from '../../src/services/channels.service.ts';
import type { BenchEnv } from '../env.ts';
import type { ProcessorProcessConfig } from './processor-process.ts';

export const BENCH_SECRET_KEY = 'bench-secret-key-0123456789abcdef0123456789';

export type BenchVentros = {
  running: Running;
  /** The channel's webhook URL on the listening server. */
  webhookUrl: string;
  channelId: string;
  projectId: string;
  /** A broker on the scenario's own queues (RabbitMQ: its own namespace). */
  broker: Broker;
  /**
   * Empties the raw queue. A scenario with no processor leaves every accepted webhook there, a
   * backlog a running system, whose processors keep the queue short, never has — and a quorum
   * queue just filled with hundreds of megabytes confirms far more slowly for a while (figures in
   * docs/benchmarks.md).
   */
  emptyRawQueue(): Promise<void>;
  /** What a processor in a process of its own needs to reach the same database and queues;
   * undefined on PGlite (one process's database). */
  processorProcessConfig?: ProcessorProcessConfig;
  /** Another connection to the same database and queues, as a second process would have. */
  connect(): Promise<{ db: Database; broker: Broker }>;
  stop(): Promise<void>;
};

export async function startBenchVentros(env: BenchEnv, role: 'api' | 'all'): Promise<BenchVentros> {
  const closers: Array<() => Promise<void>> = [];
  const close = async () => {
    while (closers.length) await closers.pop()!().catch((err) => console.error('bench cleanup failed:', err));
  };
  const namespace = `bench_inbound_${randomBytes(4).toString('hex')}.`;
  const dbUrl = env.database === 'postgres' ? await databaseUrl(env.db) : undefined;

  async function makeBroker(db: Database): Promise<Broker> {
    if (env.brokerKind === 'rabbitmq') {
      const { connectRabbitBroker } = await import('../../src/broker/rabbitmq.ts');
      const b = await connectRabbitBroker({ url: process.env.AMQP_URL!, db, retryDelaysMs: [1000, 5000], namespace });
      closers.push(() => b.close());
      return b;
    }
    const { makePostgresBroker } = await import('../../src/broker/postgres-broker.ts');
    const b = makePostgresBroker({ db, retryDelaysMs: [1000, 5000] });
    closers.push(() => b.close());
    return b;
  }
  if (env.brokerKind === 'rabbitmq') {
    const { deleteNamespace } = await import('../../src/broker/rabbitmq.ts');
    closers.push(() => deleteNamespace(process.env.AMQP_URL!, namespace));
  }

  try {
    const broker = await makeBroker(env.db);
    const config = loadConfig({ LOG_LEVEL: 'silent', SECRET_KEY: BENCH_SECRET_KEY, HOST: '127.0.0.1', PORT: '0', PUBLIC_URL: 'http://127.0.0.1' });
    const running = await startVentros({ config, db: env.db, broker, role, logger: silentLogger, listen: true });
    closers.push(() => running.stop());
    const projectId = uuidv7();
    const channels = makeChannelsService({ db: env.db, secretKey: BENCH_SECRET_KEY, publicUrl: running.url!, defaultSessionTimeoutMinutes: 30 });
    const ch = await channels.create(projectId, {
      name: 'bench',
      type: 'waha',
      config: { base_url: 'http://127.0.0.1:1', api_key: 'bench', session: 'bench' },
    });
    return {
      running,
      webhookUrl: ch.webhookUrl,
      channelId: ch.id,
      projectId,
      broker,
      ...(dbUrl
        ? { processorProcessConfig: { databaseUrl: dbUrl, namespace, secretKey: BENCH_SECRET_KEY, ...(env.brokerKind === 'rabbitmq' ? { amqpUrl: process.env.AMQP_URL! } : {}) } }
        : {}),
      async emptyRawQueue() {
        if (env.brokerKind === 'rabbitmq') {
          const conn = await amqp.connect(process.env.AMQP_URL!);
          conn.on('error', () => {}); // a failed purge rejects below; no unhandled 'error' event
          try {
            const ch = await conn.createChannel();
            await ch.purgeQueue(workQueueName(namespace, Queues.inboundRaw));
          } finally {
            await conn.close();
          }
          return;
        }
        await env.db.query('DELETE FROM queue_messages WHERE queue = $1', [Queues.inboundRaw]);
      },
      async connect() {
        if (!dbUrl) return { db: env.db, broker: await makeBroker(env.db) }; // PGlite: one database handle per process
        const db = connectPostgres({ url: dbUrl, max: 10, applicationName: 'ventros-bench-processor' });
        closers.push(() => db.close());
        return { db, broker: await makeBroker(db) };
      },
      stop: close,
    };
  } catch (err) {
    await close();
    throw err;
  }
}

async function databaseUrl(db: Database): Promise<string> {
  const name = (await db.query<{ d: string }>('SELECT current_database() AS d')).rows[0].d;
  const u = new URL(process.env.DATABASE_URL!);
  u.pathname = `/${name}`;
  return u.toString();
}
