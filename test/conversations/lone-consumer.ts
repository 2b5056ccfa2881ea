// One choreography consumer on its own, as main.ts starts it, on a fresh database and a broker of
// the given kind: for what the consumer tells its broker (ack or fail), which the tests that drive
// the whole service cannot see, and on both brokers rather than the service's default one.
import pino from 'pino';
import type { Broker, OutgoingMessage } from '../../src/broker/broker.ts';
import { consumerQueues } from '../../src/broker/topology.ts';
import type { Database } from '../../src/db/database.ts';
import type { Logger } from '../../src/observability/logger.ts';
import { makeTestBroker, type BrokerKind } from '../support/brokers.ts';
import { makeTestDb, onCleanup, waitFor } from '../support/env.ts';

export type LoneConsumer = {
  db: Database;
  broker: Broker;
  /** Each delivery's attempt and what the handler told the broker, in order. */
  outcomes: Array<{ attempt: number; acked: boolean }>;
  /** The consumer's log lines, parsed. */
  lines: Array<Record<string, unknown>>;
};

export async function startLoneConsumer(
  kind: BrokerKind,
  start: (deps: { db: Database; broker: Broker; logger: Logger }) => Promise<{ stop(): Promise<void> }>,
): Promise<LoneConsumer> {
  const { db } = await makeTestDb();
  const broker = await makeTestBroker(kind, db, { retryDelaysMs: [50, 100] });
  await broker.declareQueues(consumerQueues);
  const outcomes: LoneConsumer['outcomes'] = [];
  const watched: Broker = {
    ...broker,
    consume: (queue, handler, opts) =>
      broker.consume(
        queue,
        async (d) => {
          try {
            await handler(d);
            outcomes.push({ attempt: d.attempt, acked: true });
          } catch (err) {
            outcomes.push({ attempt: d.attempt, acked: false });
            throw err;
          }
        },
        opts,
      ),
  };
  const lines: LoneConsumer['lines'] = [];
  const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
  const consumer = await start({ db, broker: watched, logger });
  onCleanup(() => consumer.stop());
  return { db, broker, outcomes, lines };
}

/**
 * Publishes one message on `domain.events` and waits until the consumer's queue holds nothing any
 * more (ready, in flight or waiting for a retry): handled for good, or dead-lettered.
 */
export async function publishAndSettle(c: LoneConsumer, routingKey: string, queue: string, msg: OutgoingMessage): Promise<void> {
  await c.broker.publish(routingKey, [msg]);
  await waitFor(() => c.outcomes.length > 0, 'the first delivery');
  await waitFor(async () => {
    const [s] = await c.broker.stats([queue]);
    return s.depth === 0 && s.retrying === 0;
  }, `${queue} to be empty`);
}
