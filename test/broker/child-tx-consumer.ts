// A consumer in its own process for test/broker/db-restart-mid-transaction.test.ts: its handler
// runs a transaction through the real PostgreSQL adapter, and on the first run the server ends
// that transaction's backend between two of its statements (pg_terminate_backend: the FATAL 57P01
// a fast shutdown, a restart or a failover sends every session), then the handler goes on to its
// next statement. In its own process because the failure it guards against is a crash.
// Usage: node --import tsx test/broker/child-tx-consumer.ts <postgres|rabbitmq> <queue>
// Env: CHILD_DATABASE_URL, CHILD_NAMESPACE (RabbitMQ), AMQP_URL.
// Prints: ready | in-tx <pid> | failed attempt=<n> marked=<bool> | done attempt=<n>
import type { Broker } from '../../src/broker/broker.ts';
import { makePostgresBroker } from '../../src/broker/postgres-broker.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { isDatabaseUnavailable } from '../../src/db/unavailable.ts';

const [kind, queue] = process.argv.slice(2);
const dbUrl = process.env.CHILD_DATABASE_URL;
if ((kind !== 'postgres' && kind !== 'rabbitmq') || !queue || !dbUrl) {
  console.error('usage: child-tx-consumer.ts <postgres|rabbitmq> <queue> (CHILD_DATABASE_URL required)');
  process.exit(2);
}
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(3), 90_000).unref();
setInterval(() => {}, 60_000);

const out = (line: string) => process.stdout.write(`${line}\n`);
const db = connectPostgres({ url: dbUrl, max: 4, applicationName: 'child-tx-consumer' });
let broker: Broker;
if (kind === 'postgres') {
  broker = makePostgresBroker({ db, retryDelaysMs: [50, 100], pollMs: 100, leaseMs: 2000 });
} else {
  const { connectRabbitBroker } = await import('../../src/broker/rabbitmq.ts');
  broker = await connectRabbitBroker({ url: process.env.AMQP_URL!, db, retryDelaysMs: [50, 100], namespace: process.env.CHILD_NAMESPACE ?? '' });
}

/** Ends backend `pid` from another connection and waits until the server has closed it. */
async function endBackend(pid: number): Promise<void> {
  await db.query('SELECT pg_terminate_backend($1)', [pid]);
  for (let i = 0; i < 400; i++) {
    const r = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [pid]);
    if (r.rows[0].n === 0) break;
    await new Promise((r) => setTimeout(r, 25));
  }
  // The server wrote its FATAL before the backend exited: let this process read that socket
  // before the handler's next statement goes out.
  await new Promise((r) => setImmediate(r));
  await new Promise((r) => setImmediate(r));
}

let runs = 0;
await broker.consume(
  queue,
  async (msg) => {
    const first = ++runs === 1;
    try {
      await db.transaction(async (tx) => {
        const r = await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        if (first) {
          out(`in-tx ${r.rows[0].pid}`);
          await endBackend(r.rows[0].pid);
        }
        await tx.query('SELECT 2');
      });
    } catch (err) {
      out(`failed attempt=${msg.attempt} marked=${isDatabaseUnavailable(err)}`);
      throw err;
    }
    out(`done attempt=${msg.attempt}`);
  },
  { concurrency: 1 },
);
out('ready');
