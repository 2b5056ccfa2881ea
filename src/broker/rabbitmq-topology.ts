// RabbitMQ names and declarations. Every name carries the namespace prefix ('' in production; tests
// use one per file so they can share one RabbitMQ server). Per queue Q:
//   Q               quorum queue, delivery limit, dead-letters to Q.dlq (consumer crashes only)
//   Q.retry.<delay> classic queue with a fixed TTL, dead-letters back to Q (one per retry delay,
//                   because per-message TTLs only expire at the head of a queue)
//   Q.dlq           classic queue drained into the dead_letters table
import amqp from 'amqplib';
import type { Channel, ChannelModel } from 'amqplib';
import { DOMAIN_EXCHANGE, type QueueSpec } from './broker.ts';

/** Header with the attempt the next delivery is (absent on the first). */
export const ATTEMPT_HEADER = 'x-attempt';

export type Topology = { ns: string; deliveryLimit: number };

export const exchangeName = (ns: string): string => `${ns}${DOMAIN_EXCHANGE}`;
export const workQueueName = (ns: string, queue: string): string => `${ns}${queue}`;
export const deadQueueName = (ns: string, queue: string): string => `${ns}${queue}.dlq`;
export const retryQueueName = (ns: string, queue: string, delayMs: number): string =>
  `${ns}${queue}.retry.${delayLabel(delayMs)}`;

/** 50 → '50ms', 5000 → '5s', 120000 → '2m', 7200000 → '2h': readable in the management UI. */
export function delayLabel(ms: number): string {
  if (!Number.isInteger(ms) || ms < 0) throw new Error(`retry delay must be a whole number of ms, got ${ms}`);
  if (ms > 0 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms > 0 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms > 0 && ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

// deleteNamespace must find what a namespace created without a listing API (AMQP has none and
// the management plugin is optional), so every declaration is remembered here, per process.
const declaredNames = new Map<string, { exchanges: Set<string>; queues: Set<string> }>();

function remember(ns: string, kind: 'exchanges' | 'queues', name: string): void {
  let entry = declaredNames.get(ns);
  if (!entry) declaredNames.set(ns, (entry = { exchanges: new Set(), queues: new Set() }));
  entry[kind].add(name);
}

export async function declareExchange(ch: Channel, ns: string): Promise<void> {
  await ch.assertExchange(exchangeName(ns), 'topic', { durable: true });
  remember(ns, 'exchanges', exchangeName(ns));
}

/** Declares Q, Q.dlq, the bindings and one wait queue per delay. Same arguments → idempotent. */
export async function declareQueue(ch: Channel, t: Topology, spec: QueueSpec, delays: Iterable<number>): Promise<void> {
  const work = workQueueName(t.ns, spec.name);
  const dead = deadQueueName(t.ns, spec.name);
  await ch.assertQueue(dead, { durable: true });
  remember(t.ns, 'queues', dead);
  await ch.assertQueue(work, {
    durable: true,
    arguments: {
      'x-queue-type': 'quorum',
      'x-delivery-limit': t.deliveryLimit,
      'x-dead-letter-exchange': '',
      'x-dead-letter-routing-key': dead,
    },
  });
  remember(t.ns, 'queues', work);
  for (const pattern of spec.bindings ?? []) await ch.bindQueue(work, exchangeName(t.ns), pattern);
  await declareRetryQueues(ch, t.ns, spec.name, delays);
}

export async function declareRetryQueues(ch: Channel, ns: string, queue: string, delays: Iterable<number>): Promise<void> {
  for (const delay of new Set(delays)) {
    const name = retryQueueName(ns, queue, delay);
    await ch.assertQueue(name, {
      durable: true,
      arguments: {
        'x-message-ttl': delay,
        'x-dead-letter-exchange': '',
        'x-dead-letter-routing-key': workQueueName(ns, queue),
      },
    });
    remember(ns, 'queues', name);
  }
}

/** A channel whose server-side errors are logged instead of crashing the process (amqplib throws
 * on an 'error' event nobody listens to). */
export async function openChannel(conn: ChannelModel, onError: (err: Error) => void = () => {}): Promise<Channel> {
  const ch = await conn.createChannel();
  ch.on('error', onError);
  return ch;
}

/** Deletes every exchange and queue declared under `namespace` by this process (test cleanup). */
export async function deleteNamespace(url: string, namespace: string): Promise<void> {
  if (namespace === '') throw new Error('refusing to delete the production (empty) namespace');
  const entry = declaredNames.get(namespace);
  if (!entry) return;
  // Taken out first: a broker of this namespace that is still running registers anew what it
  // re-declares meanwhile, so a later call deletes that too.
  declaredNames.delete(namespace);
  const conn = await amqp.connect(url);
  conn.on('error', () => {});
  try {
    // A delete that fails closes its channel, so each gets a channel of its own when needed.
    let ch = await openChannel(conn);
    const run = async (op: (c: Channel) => Promise<unknown>) => {
      try {
        await op(ch);
      } catch {
        ch = await openChannel(conn);
      }
    };
    for (const q of entry.queues) await run((c) => c.deleteQueue(q));
    for (const x of entry.exchanges) await run((c) => c.deleteExchange(x));
    await ch.close().catch(() => {});
  } finally {
    await conn.close().catch(() => {});
  }
}
