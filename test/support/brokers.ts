// Broker factories for tests. The conformance suite runs on every variant available to the
// current target: embedded → the Postgres broker on PGlite; services → RabbitMQ, and the Postgres
// broker on real PostgreSQL (which is also what the embedded default runs on in production-lite).
import type { Broker } from '../../src/broker/broker.ts';
import type { Database } from '../../src/db/database.ts';
import { makePostgresBroker } from '../../src/broker/postgres-broker.ts';
import { connectRabbitBroker } from '../../src/broker/rabbitmq.ts';
import { onCleanup, onServices, uniqueName } from './env.ts';

export type BrokerKind = 'postgres' | 'rabbitmq';

export type TestBrokerOptions = {
  retryDelaysMs?: readonly number[];
  /** Reuse a namespace (another process joining the same RabbitMQ queues). */
  namespace?: string;
};

/** The broker variants the conformance suite runs on for this target. */
export function brokerKinds(): BrokerKind[] {
  return onServices ? ['rabbitmq', 'postgres'] : ['postgres'];
}

/** The broker the application uses on this target (what main.ts would pick). */
export function defaultBrokerKind(): BrokerKind {
  return onServices ? 'rabbitmq' : 'postgres';
}

export async function makeTestBroker(
  kind: BrokerKind,
  db: Database,
  opts: TestBrokerOptions = {},
): Promise<Broker & { namespace: string }> {
  const retryDelaysMs = opts.retryDelaysMs ?? [50, 100];
  const namespace = opts.namespace ?? `${uniqueName('vt')}.`;
  let broker: Broker;
  if (kind === 'postgres') {
    broker = makePostgresBroker({ db, retryDelaysMs, pollMs: 100 });
  } else {
    broker = await connectRabbitBroker({ url: process.env.AMQP_URL!, db, retryDelaysMs, namespace });
  }
  onCleanup(async () => {
    await broker.close();
    if (kind === 'rabbitmq') await deleteRabbitNamespace(namespace);
  });
  return Object.assign(broker, { namespace });
}

/** Removes every queue and exchange a test created under its namespace. */
export async function deleteRabbitNamespace(namespace: string): Promise<void> {
  const { deleteNamespace } = await import('../../src/broker/rabbitmq.ts');
  await deleteNamespace(process.env.AMQP_URL!, namespace);
}
