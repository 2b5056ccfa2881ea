// The RabbitMQ adapter of the broker port (broker.ts): quorum work queues, wait queues with fixed
// TTLs for retries, dead letters into the database. Names and declarations: rabbitmq-topology.ts;
// the self-healing connection and confirms: rabbitmq-connection.ts; consuming: rabbitmq-consumer.ts.
import type { ChannelModel } from 'amqplib';
import type { Database } from '../db/database.ts';
import { uuidv7 } from '../domain/ids.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { SEND_HEADER, errorText, type Broker, type Consumer, type DeadLetterBody, type OutgoingMessage, type QueueSpec, type QueueStats } from './broker.ts';
import { withDeadline } from '../deadline.ts';
import { openRabbitLink, type OutgoingFrame } from './rabbitmq-connection.ts';
import { makeDeadQueueDrainer, makeQueueConsumer, type ConsumerDeps, type Subscription } from './rabbitmq-consumer.ts';
import {
  declareExchange,
  declareQueue,
  declareRetryQueues,
  exchangeName,
  openChannel,
  retryQueueName,
  workQueueName,
} from './rabbitmq-topology.ts';

export { deleteNamespace } from './rabbitmq-topology.ts';
export { PublishError, type PublishFailure } from './rabbitmq-connection.ts';

export type RabbitBrokerOptions = {
  url: string;
  db: Database;
  /** Broker-wide retry delays (CONSUMER_RETRY_DELAYS); a consumer may bring its own. */
  retryDelaysMs: readonly number[];
  /** Prefix of every exchange and queue name: '' in production, one per test file. */
  namespace?: string;
  logger?: Logger;
  /** Deliveries of one message before RabbitMQ dead-letters it to Q.dlq (consumer crashes). */
  deliveryLimit?: number;
  /** Messages in flight per consumer when consume() gives no concurrency. */
  prefetch?: number;
  /** Confirm deadline of publish/send when the caller gives none. */
  confirmTimeoutMs?: number;
  /** How long a consumer's stop() and close() wait for in-flight handlers (SHUTDOWN_TIMEOUT_MS). */
  shutdownTimeoutMs?: number;
  /** Bytes sent and not confirmed, at most, before a publish fails at once (default 64 MiB). */
  maxUnconfirmedBytes?: number;
  /** Confirms owed and none for this long tears the connection down (default 30 s). */
  confirmStallMs?: number;
};

export async function connectRabbitBroker(opts: RabbitBrokerOptions): Promise<Broker> {
  const ns = opts.namespace ?? '';
  const logger = (opts.logger ?? silentLogger).child({ component: 'rabbitmq' });
  const topology = { ns, deliveryLimit: opts.deliveryLimit ?? 5 };
  const confirmTimeoutMs = opts.confirmTimeoutMs ?? 30_000;
  // Everything declared so far, so a new connection (after a broker restart) re-declares it all.
  const specs = new Map<string, QueueSpec>();
  const extraDelays = new Map<string, Set<number>>(); // per-consumer retry delays, by queue
  const consumers = new Map<Subscription, string>(); // → queue
  const drainers = new Map<string, Subscription>();

  const delaysOf = (queue: string): number[] => [...new Set([...opts.retryDelaysMs, ...(extraDelays.get(queue) ?? [])])];
  const onChannelError = (err: Error) => logger.warn({ err: errorText(err) }, 'rabbitmq topology channel error');

  async function declareAll(conn: ChannelModel, list: readonly QueueSpec[]): Promise<void> {
    const ch = await openChannel(conn, onChannelError);
    try {
      await declareExchange(ch, ns);
      for (const spec of list) await declareQueue(ch, topology, spec, delaysOf(spec.name));
    } finally {
      await ch.close().catch(() => {});
    }
  }

  const link = await openRabbitLink({
    url: opts.url,
    logger,
    maxUnconfirmedBytes: opts.maxUnconfirmedBytes,
    confirmStallMs: opts.confirmStallMs,
    async onReady(conn) {
      await declareAll(conn, [...specs.values()]);
      for (const d of drainers.values()) await d.start(conn);
      for (const c of consumers.keys()) await c.start(conn);
    },
  });
  // What each queue's dead letters keep (keepInDeadLetters), for its consumers and its Q.dlq drainer.
  const keptBodies = new Map<string, DeadLetterBody>();
  const deps: ConsumerDeps = { ns, db: opts.db, logger, link, deadLetterBody: (queue) => keptBodies.get(queue) };

  function liveConnection(): ChannelModel {
    const conn = link.connection();
    if (!conn) throw new Error('not connected to RabbitMQ');
    return conn;
  }

  async function declareQueues(list: readonly QueueSpec[]): Promise<void> {
    const conn = liveConnection();
    await declareAll(conn, list);
    for (const spec of list) {
      const known = specs.get(spec.name);
      const bindings = [...new Set([...(known?.bindings ?? []), ...(spec.bindings ?? [])])];
      specs.set(spec.name, { name: spec.name, bindings });
      if (!drainers.has(spec.name)) {
        const drainer = makeDeadQueueDrainer(deps, spec.name);
        drainers.set(spec.name, drainer);
        await drainer.start(conn);
      }
    }
  }

  function frame(exchange: string, routingKey: string, m: OutgoingMessage, mandatory: boolean): OutgoingFrame {
    return {
      exchange,
      routingKey,
      body: m.body,
      options: {
        persistent: true,
        mandatory,
        messageId: m.messageId,
        contentType: 'application/octet-stream',
        timestamp: Math.floor(Date.now() / 1000),
        headers: { ...m.headers, [SEND_HEADER]: uuidv7() },
      },
    };
  }

  const broker: Broker = {
    kind: 'rabbitmq',
    declareQueues,

    async publish(routingKey, msgs) {
      // Not mandatory: an event nobody subscribes to yet is fine (the outbox keeps the log).
      await link.publish(msgs.map((m) => frame(exchangeName(ns), routingKey, m, false)), confirmTimeoutMs);
    },

    async send(queue, msgs, sendOpts) {
      // Mandatory: a send to a queue that does not exist must fail, not vanish.
      const frames = msgs.map((m) => frame('', workQueueName(ns, queue), m, true));
      await link.publish(frames, sendOpts?.timeoutMs ?? confirmTimeoutMs);
    },

    keepInDeadLetters: (queue, keep) => void keptBodies.set(queue, keep),

    async consume(queue, handler, consumeOpts = {}) {
      const conn = liveConnection();
      const delays = consumeOpts.retryDelaysMs ?? opts.retryDelaysMs;
      let extra = extraDelays.get(queue);
      if (!extra) extraDelays.set(queue, (extra = new Set()));
      for (const d of consumeOpts.retryDelaysMs ?? []) extra.add(d);
      if (specs.has(queue)) {
        const ch = await openChannel(conn, onChannelError);
        await declareRetryQueues(ch, ns, queue, delays).finally(() => ch.close().catch(() => {}));
      } else {
        await declareQueues([{ name: queue }]); // a direct queue nobody declared yet
      }
      const sub = makeQueueConsumer(deps, queue, handler, {
        concurrency: Math.max(1, consumeOpts.concurrency ?? opts.prefetch ?? 1),
        delays,
      });
      consumers.set(sub, queue);
      try {
        await sub.start(conn);
      } catch (err) {
        // A reconnect in between starts it on the new connection; otherwise the caller learns now.
        if (link.connection() === conn) {
          consumers.delete(sub);
          throw err;
        }
      }
      const consumer: Consumer = {
        async stop(timeoutMs) {
          await sub.stop(timeoutMs ?? opts.shutdownTimeoutMs); // a reconnect meanwhile leaves a stopping subscription alone
          consumers.delete(sub);
        },
      };
      return consumer;
    },

    async stats(queues) {
      const names = queues ?? [...specs.keys()];
      const conn = liveConnection();
      const dead = await opts.db.query<{ queue: string; n: number }>(
        `SELECT queue, count(*)::int AS n FROM dead_letters WHERE replayed_at IS NULL AND queue = ANY($1::text[]) GROUP BY queue`,
        [names],
      );
      let ch = await openChannel(conn, () => {});
      // checkQueue on a missing queue closes the channel: count it as empty and carry on.
      const check = async (name: string) => {
        try {
          return await ch.checkQueue(name);
        } catch {
          ch = await openChannel(conn, () => {});
          return { messageCount: 0, consumerCount: 0 };
        }
      };
      const out: QueueStats[] = [];
      try {
        for (const queue of names) {
          const work = await check(workQueueName(ns, queue));
          let retrying = 0;
          for (const d of delaysOf(queue)) retrying += (await check(retryQueueName(ns, queue, d))).messageCount;
          const deadLetters = dead.rows.find((r) => r.queue === queue)?.n ?? 0;
          // RabbitMQ counts only ready messages, and AMQP cannot see other connections' unacked
          // ones, so "in flight" is what this process's consumers hold.
          let held = 0;
          for (const [sub, q] of consumers) if (q === queue) held += sub.inFlight();
          const depth = work.messageCount + held;
          out.push({ queue, depth, retrying, consumers: work.consumerCount, deadLetters });
        }
      } finally {
        await ch.close().catch(() => {});
      }
      return out;
    },

    async check(timeoutMs = 2000) {
      const conn = liveConnection();
      // A round trip, so a connection that is open but stuck (blocked, network gone quiet) fails too.
      const probe = (async () => {
        const ch = await openChannel(conn);
        await ch.close();
      })();
      probe.catch(() => {});
      await withDeadline(probe, timeoutMs, `RabbitMQ did not answer within ${timeoutMs} ms`);
    },

    async close() {
      link.stopReconnecting();
      const timeout = opts.shutdownTimeoutMs ?? 10_000;
      await Promise.all([...consumers.keys()].map((c) => c.stop(timeout)));
      consumers.clear();
      await Promise.all([...drainers.values()].map((d) => d.stop(Math.min(timeout, 2000))));
      await link.close();
    },
  };
  return broker;
}
