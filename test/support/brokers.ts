// Broker factories for tests. The conformance suite runs on every variant available to the
// current target: embedded → the Postgres broker on PGlite; services → RabbitMQ, and the Postgres
// broker on real PostgreSQL (which is also what the embedded default runs on in production-lite).
import type { Broker } from '../../src/broker/broker.ts';
import type { Database } from '../../src/db/database.ts';
import { makePostgresBroker } from '../../src/broker/postgres-broker.ts';
import { onCleanup, onServices, uniqueName } from './env.ts';

export type BrokerKind = 'postgres' | 'rabbitmq';

export type TestBrokerOptions = {
  retryDelaysMs?: readonly number[];
  /** Reuse a namespace (another process joining the same RabbitMQ queues). */
  namespace?: string;
  /** Postgres broker only: claim lease and poll interval (short leases make redelivery quick). */
  leaseMs?: number;
  pollMs?: number;
  shutdownTimeoutMs?: number;
};

/** The broker variants the conformance suite runs on for this target. */
export function brokerKinds(): BrokerKind[] {
  return onServices ? ['rabbitmq', 'postgres'] : ['postgres'];
}

/** The broker the application uses on this target (what main.ts would pick). */
export function defaultBrokerKind(): BrokerKind {
  return onServices ? 'rabbitmq' : 'postgres';
}

// Brokers sharing a namespace: it is deleted when the last of them is cleaned up (cleanups run
// last-registered first, so the broker that created it goes last).
const namespaceUsers = new Map<string, number>();

export async function makeTestBroker(
  kind: BrokerKind,
  db: Database,
  opts: TestBrokerOptions = {},
): Promise<Broker & { namespace: string }> {
  const retryDelaysMs = opts.retryDelaysMs ?? [50, 100];
  const namespace = opts.namespace ?? `${uniqueName('vt')}.`;
  let broker: Broker;
  if (kind === 'postgres') {
    broker = makePostgresBroker({ db, retryDelaysMs, pollMs: opts.pollMs ?? 100, ...(opts.leaseMs ? { leaseMs: opts.leaseMs } : {}), ...(opts.shutdownTimeoutMs ? { shutdownTimeoutMs: opts.shutdownTimeoutMs } : {}) });
  } else {
    // Loaded lazily so the embedded target does not depend on the RabbitMQ adapter.
    const { connectRabbitBroker } = await import('../../src/broker/rabbitmq.ts');
    broker = await connectRabbitBroker({ url: process.env.AMQP_URL!, db, retryDelaysMs, namespace, ...(opts.shutdownTimeoutMs ? { shutdownTimeoutMs: opts.shutdownTimeoutMs } : {}) });
  }
  namespaceUsers.set(namespace, (namespaceUsers.get(namespace) ?? 0) + 1);
  onCleanup(async () => {
    await broker.close();
    const left = (namespaceUsers.get(namespace) ?? 1) - 1;
    namespaceUsers.set(namespace, left);
    if (kind === 'rabbitmq' && left === 0) await deleteRabbitNamespace(namespace);
  });
  return Object.assign(broker, { namespace });
}

/** Removes every queue and exchange a test created under its namespace. */
export async function deleteRabbitNamespace(namespace: string): Promise<void> {
  const { deleteNamespace } = await import('../../src/broker/rabbitmq.ts');
  await deleteNamespace(process.env.AMQP_URL!, namespace);
}
