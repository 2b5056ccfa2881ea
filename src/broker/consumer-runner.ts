// The one runner every consumer goes through: it measures and logs each message and turns any
// throw (sync or async, Error or not) into a rejected promise, so the broker adapter applies the
// retry / dead-letter path and the process never goes down because of a handler.
import type { Broker, Consumer, Delivery, Handler } from './broker.ts';
import { msUntil, type Component } from '../deadline.ts';
import type { Logger } from '../observability/logger.ts';
import { consumerDuration, consumerMessagesTotal } from '../observability/metrics.ts';

export type ConsumerDef = {
  /** Metric/log name of the consumer. */
  name: string;
  queue: string;
  concurrency?: number;
  retryDelaysMs?: readonly number[];
  handle: Handler;
};

export function wrapHandler(def: ConsumerDef, logger: Logger): Handler {
  return async (msg: Delivery) => {
    const end = consumerDuration.startTimer({ consumer: def.name });
    try {
      await Promise.resolve().then(() => def.handle(msg));
      consumerMessagesTotal.inc({ consumer: def.name, result: 'ok' });
    } catch (err) {
      consumerMessagesTotal.inc({ consumer: def.name, result: 'failed' });
      logger.warn({ consumer: def.name, message_id: msg.messageId, attempt: msg.attempt, err }, 'handler failed; the broker will retry or dead-letter it');
      throw err instanceof Error ? err : new Error(`handler rejected with a non-error: ${String(err)}`);
    } finally {
      end();
    }
  };
}

export function startConsumer(broker: Broker, def: ConsumerDef, logger: Logger): Promise<Consumer> {
  return broker.consume(def.queue, wrapHandler(def, logger.child({ consumer: def.name })), {
    concurrency: def.concurrency ?? 1,
    ...(def.retryDelaysMs ? { retryDelaysMs: def.retryDelaysMs } : {}),
  });
}

/** A consumer as a part of the process: stopped by the shutdown's deadline. */
export function consumerComponent(name: string, consumer: Consumer): Component {
  return { name, stop: (deadline) => consumer.stop(msUntil(deadline)) };
}
