// Gauges of the whole system, read when scraped instead of counted in the process: `queue_depth`
// and `dead_letters` from the broker (and the dead-letter table), `sessions_active` and the
// queued replies (`outbound_queued`, `outbound_oldest_queued_seconds`) from the database. Every process that serves /metrics reports the same figures, so a dashboard takes
// max() over processes, not sum(). Also read at the scrape, but per process (sum them): the
// process's own connection pool (`db_pool_*`).
import type { Broker } from '../broker/broker.ts';
import type { Database, Queryable } from '../db/database.ts';
import { countQueuedReplies } from '../db/outbound.sql.ts';
import { countActiveSessions } from '../db/session-lifecycle.sql.ts';
import { dbPoolConnections, dbPoolMaxConnections, dbPoolWaiting, deadLettersGauge, outboundOldestQueuedSeconds, outboundQueued, queueDepth, sessionsActive } from './metrics.ts';

/** The longest a scrape may be answered from the last reading instead of asking again. */
export const QUEUE_GAUGES_MAX_AGE_MS = 5000;

/**
 * `read` for scrapes: those that come together share one reading, and one taken less than
 * `maxAgeMs` ago is reused. A failed reading leaves the last values and is tried again at the
 * next scrape. One that hangs is shared by the scrapes meanwhile (none starts another beside it);
 * the scrape itself stops waiting after METRICS_REFRESH_DEADLINE_MS and answers with the last
 * values, and the gauges move again once the reading ends — the database's or broker's own
 * timeouts end it.
 */
export function cachedReading(read: () => Promise<void>, maxAgeMs: number): () => Promise<void> {
  let reading: Promise<void> | undefined;
  let readAt = -Infinity;
  return () => {
    if (reading) return reading;
    if (performance.now() - readAt < maxAgeMs) return Promise.resolve();
    reading = (async () => {
      try {
        await read();
        readAt = performance.now();
      } finally {
        reading = undefined;
      }
    })();
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

/**
 * Reads this process's connection pool into `db_pool_connections{state}`, `db_pool_max_connections`
 * and `db_pool_waiting` (in memory, at every scrape). Per process, unlike the gauges above: sum
 * them over processes to see what they take of the server's max_connections. A pool whose busy
 * connections stay at its maximum with callers waiting is too small for its load (DATABASE_POOL_MAX).
 * Nothing for the embedded database, which has one connection.
 */
export function poolGaugeReader(db: Database): () => void {
  return () => {
    const s = db.poolStats?.();
    if (!s) return;
    dbPoolConnections.set({ state: 'busy' }, s.busy);
    dbPoolConnections.set({ state: 'idle' }, s.idle);
    dbPoolMaxConnections.set(s.max);
    dbPoolWaiting.set(s.waiting);
  };
}
