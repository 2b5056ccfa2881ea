// Gauges of the whole system, read when scraped instead of counted in the process: `queue_depth`
// and `dead_letters` from the broker (and the dead-letter table), `sessions_active` and the
// queued replies (`outbound_queued`, `outbound_oldest_queued_seconds`) from the database. Every process that serves /metrics reports the same figures, so a dashboard takes
// max() over processes, not sum().
import type { Broker } from '../broker/broker.ts';
import type { Queryable } from '../db/database.ts';
import { countQueuedReplies } from '../db/outbound.sql.ts';
import { countActiveSessions } from '../db/session-lifecycle.sql.ts';
import { withDeadline } from '../deadline.ts';
import { deadLettersGauge, outboundOldestQueuedSeconds, outboundQueued, queueDepth, sessionsActive } from './metrics.ts';

/** The longest a scrape may be answered from the last reading instead of asking again. */
export const QUEUE_GAUGES_MAX_AGE_MS = 5000;

/** A reading that has not ended by then is given up, so that the next scrape asks again. */
export const GAUGE_READING_DEADLINE_MS = 10_000;

/**
 * `read` for scrapes: those that come together share one reading, and one taken less than
 * `maxAgeMs` ago is reused. A failed reading leaves the last values and is tried again at the
 * next scrape; so does one that has not ended within `deadlineMs` (a connection that hangs
 * without failing would otherwise keep every later scrape waiting on it, and the gauges frozen).
 */
export function cachedReading(read: () => Promise<void>, maxAgeMs: number, deadlineMs = GAUGE_READING_DEADLINE_MS): () => Promise<void> {
  let reading: Promise<void> | undefined;
  /** The reading itself, which goes on past its deadline: no other starts until it has ended. */
  let underway: Promise<void> | undefined;
  let readAt = -Infinity;
  return () => {
    if (reading) return reading;
    if (performance.now() - readAt < maxAgeMs) return Promise.resolve();
    if (!underway) {
      const r: Promise<void> = read().then(() => void (readAt = performance.now()));
      underway = r;
      r.then(
        () => undefined,
        () => undefined,
      ).finally(() => {
        if (underway === r) underway = undefined;
      });
    }
    const current = underway;
    reading = withDeadline(current, deadlineMs, 'gauge reading did not end in time').finally(() => {
      reading = undefined;
    });
    return reading;
  };
}

/**
 * A `refreshMetrics` for the HTTP app: reads the queues' depth and dead letters into the gauges
 * (RabbitMQ answers one round trip per queue and per retry queue).
 */
export function makeQueueGaugesRefresher(broker: Broker, queues: readonly string[], maxAgeMs = QUEUE_GAUGES_MAX_AGE_MS): () => Promise<void> {
  return cachedReading(async () => {
    for (const s of await broker.stats(queues)) {
      queueDepth.set({ queue: s.queue }, s.depth);
      deadLettersGauge.set({ queue: s.queue }, s.deadLetters);
    }
  }, maxAgeMs);
}

/**
 * Reads the active sessions of every project into `sessions_active` (a count over the partial
 * index of active sessions, at most once per `maxAgeMs`). Counted in each process instead, it
 * would be right in none: a session opened by one process's processor is often ended by another's
 * sweeper or API.
 */
export function makeSessionsGaugeRefresher(db: Queryable, maxAgeMs = QUEUE_GAUGES_MAX_AGE_MS): () => Promise<void> {
  return cachedReading(async () => sessionsActive.set(await countActiveSessions(db)), maxAgeMs);
}

/**
 * Reads the replies still queued (every project) into `outbound_queued` and the age of the oldest
 * into `outbound_oldest_queued_seconds`: a provider that is down shows as both growing.
 */
export function makeOutboundGaugeRefresher(db: Queryable, maxAgeMs = QUEUE_GAUGES_MAX_AGE_MS): () => Promise<void> {
  return cachedReading(async () => {
    const q = await countQueuedReplies(db);
    outboundQueued.set(q.count);
    outboundOldestQueuedSeconds.set(q.oldestSeconds);
  }, maxAgeMs);
}
