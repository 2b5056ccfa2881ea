// A consumer in its own process, for the "consumer dies without acking" test: it takes messages
// and never settles them, printing `got <messageId>` for each, until the test SIGKILLs it.
// Usage: node --import tsx test/broker/child-consumer.ts <postgres|rabbitmq> <queue>
// Env: CHILD_DATABASE_URL (the test database), CHILD_NAMESPACE (RabbitMQ names), AMQP_URL,
//      CHILD_LEASE_MS, CHILD_CONCURRENCY.
import type { Broker } from '../../src/broker/broker.ts';
import { makePostgresBroker } from '../../src/broker/postgres-broker.ts';
import { connectPostgres } from '../../src/db/postgres.ts';

const [kind, queue] = process.argv.slice(2);
const dbUrl = process.env.CHILD_DATABASE_URL;
if ((kind !== 'postgres' && kind !== 'rabbitmq') || !queue || !dbUrl) {
  console.error('usage: child-consumer.ts <postgres|rabbitmq> <queue> (CHILD_DATABASE_URL required)');
  process.exit(2);
}

// If the test process goes away without killing us, do not linger.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
setTimeout(() => process.exit(3), 120_000).unref();
setInterval(() => {}, 60_000); // the broker's own timers are unref'd; stay alive until killed

const db = connectPostgres({ url: dbUrl, max: 4, applicationName: 'ventros-test-child' });
let broker: Broker;
if (kind === 'postgres') {
  broker = makePostgresBroker({ db, retryDelaysMs: [50, 100], pollMs: 100, leaseMs: Number(process.env.CHILD_LEASE_MS ?? 1000) });
} else {
  const { connectRabbitBroker } = await import('../../src/broker/rabbitmq.ts');
  broker = await connectRabbitBroker({ url: process.env.AMQP_URL!, db, retryDelaysMs: [50, 100], namespace: process.env.CHILD_NAMESPACE ?? '' });
}

await broker.consume(
  queue,
  (msg) => {
    process.stdout.write(`got ${msg.messageId}\n`);
    return new Promise<void>(() => {}); // never acks: only a redelivery can finish this message
  },
  { concurrency: Number(process.env.CHILD_CONCURRENCY ?? 3) },
);
process.stdout.write('ready\n');
