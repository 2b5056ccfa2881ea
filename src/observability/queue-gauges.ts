// `queue_depth` and `dead_letters` are read from the broker (and the dead-letter table), not counted
// in the process: a scrape asks for them. Every process that serves /metrics reports the same
// figures for the whole system, so a dashboard takes max() over processes, not sum().
import type { Broker } from '../broker/broker.ts';
import { deadLettersGauge, queueDepth } from './metrics.ts';

/** The longest a scrape may be answered from the last reading instead of asking again. */
export const QUEUE_GAUGES_MAX_AGE_MS = 5000;

/**
 * A `refreshMetrics` for the HTTP app: reads the queues' depth and dead letters into the gauges.
 * Scrapes that come together share one reading, and one taken less than `maxAgeMs` ago is reused
 * (RabbitMQ answers one round trip per queue and per retry queue). A failed reading leaves the
 * last values and is tried again at the next scrape.
 */
export function makeQueueGaugesRefresher(broker: Broker, queues: readonly string[], maxAgeMs = QUEUE_GAUGES_MAX_AGE_MS): () => Promise<void> {
  let reading: Promise<void> | undefined;
  let readAt = -Infinity;
  return () => {
    if (reading) return reading;
    if (performance.now() - readAt < maxAgeMs) return Promise.resolve();
    reading = (async () => {
      try {
        for (const s of await broker.stats(queues)) {
          queueDepth.set({ queue: s.queue }, s.depth);
          deadLettersGauge.set({ queue: s.queue }, s.deadLetters);
        }
        readAt = performance.now();
      } finally {
        reading = undefined;
      }
    })();
    return reading;
  };
}
