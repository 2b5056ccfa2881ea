// Queries on the `outbox` table, which is both the transactional outbox (rows with
// published_at NULL) and the event log (published rows, kept until pruned by retention).
import type { Queryable } from '../db/database.ts';
import { decodeCursor, exactTime, toPage } from '../db/keyset.ts';
import { pruneOlderThan } from '../db/prune.ts';
import { isEventType, type AggregateType, type EventEnvelope } from '../domain/events.ts';
import { instant } from '../domain/instant.ts';
import { invalid } from '../errors.ts';
import { isUuid } from '../domain/ids.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'events';

/**
 * Appends events in the caller's transaction: they commit with the aggregate write or not at all.
 * One statement per batch (unnest) keeps the inbound transaction short; the statement trigger then
 * sends one NOTIFY, delivered at commit, which wakes the relay.
 */
export async function appendEvents(tx: Queryable, events: readonly EventEnvelope[]): Promise<void> {
  if (events.length === 0) return;
  await tx.query(
    `INSERT INTO outbox (id, type, version, project_id, aggregate_type, aggregate_id, data, occurred_at)
     SELECT * FROM unnest($1::uuid[], $2::text[], $3::int[], $4::uuid[], $5::text[], $6::text[], $7::jsonb[], $8::timestamptz[])`,
    [
      events.map((e) => e.id),
      events.map((e) => e.type),
      events.map((e) => e.version),
      events.map((e) => e.project_id),
      events.map((e) => e.aggregate_type),
      events.map((e) => e.aggregate_id),
      events.map((e) => JSON.stringify(e.data)),
      events.map((e) => e.occurred_at),
    ],
  );
}

const ENVELOPE_COLUMNS = 'seq, id, type, version, project_id, aggregate_type, aggregate_id, data, occurred_at';

export type OutboxRow = { seq: number; envelope: EventEnvelope };

/** An outbox row (ENVELOPE_COLUMNS) as the event envelope the relay publishes. */
export function toEnvelope(r: Record<string, any>): EventEnvelope {
  return {
    id: r.id,
    type: r.type,
    version: r.version,
    occurred_at: new Date(r.occurred_at).toISOString(),
    project_id: r.project_id,
    aggregate_type: r.aggregate_type as AggregateType,
    aggregate_id: r.aggregate_id,
    data: r.data,
  } as EventEnvelope;
}

/**
 * Locks up to `limit` unpublished rows, oldest first, skipping rows another relay holds. Inside a
 * transaction the locks last until it ends, which is what keeps relays apart on PostgreSQL;
 * `exclude` does the same for relays sharing one PGlite (see in-process-claims.ts).
 */
export async function claimUnpublished(tx: Queryable, limit: number, exclude: readonly number[] = []): Promise<OutboxRow[]> {
  const r = await tx.query(
    `SELECT ${ENVELOPE_COLUMNS} FROM outbox
     WHERE published_at IS NULL AND seq <> ALL($2::bigint[])
     ORDER BY seq
     LIMIT $1
     FOR UPDATE SKIP LOCKED`,
    [limit, exclude],
  );
  return r.rows.map((row) => ({ seq: Number(row.seq), envelope: toEnvelope(row) }));
}

/**
 * Marks claimed rows published. Returns each row's commit-to-publish lag in seconds, computed by
 * the database clock on both ends (created_at is the database's clock too), so app/db clock skew
 * cannot distort the metric.
 */
export async function markPublished(tx: Queryable, seqs: readonly number[]): Promise<number[]> {
  const r = await tx.query<{ lag: number }>(
    `UPDATE outbox SET published_at = clock_timestamp(), publish_attempts = publish_attempts + 1, last_error = NULL
     WHERE seq = ANY($1::bigint[]) AND published_at IS NULL
     RETURNING extract(epoch FROM clock_timestamp() - created_at)::float8 AS lag`,
    [seqs],
  );
  return r.rows.map((x) => Number(x.lag));
}

/** Records a failed publish on rows that stay unpublished (visible in the log for operators). */
export async function markPublishFailed(q: Queryable, seqs: readonly number[], error: string): Promise<void> {
  await q.query(
    `UPDATE outbox SET publish_attempts = publish_attempts + 1, last_error = $2
     WHERE seq = ANY($1::bigint[]) AND published_at IS NULL`,
    [seqs, error.slice(0, 2000)],
  );
}

/** Rows committed but not yet published (the outbox_pending gauge). Uses the partial index. */
export async function countPending(q: Queryable): Promise<number> {
  const r = await q.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox WHERE published_at IS NULL');
  return Number(r.rows[0].n);
}

/**
 * Deletes up to `limit` consumers' markers of events applied more than `olderThanDays` ago (the
 * outbox's own retention: an event that old is gone from it, and comes again only if a dead letter
 * of it is replayed — which then applies once more).
 */
export function pruneProcessedEvents(q: Queryable, olderThanDays: number, limit: number): Promise<number> {
  return pruneOlderThan(q, { table: 'processed_events', key: ['consumer', 'event_id'], at: 'processed_at' }, olderThanDays, limit);
}

/**
 * Deletes up to `limit` published rows older than the retention (housekeeping calls it chunk
 * after chunk). Unpublished rows are never touched, however old: they are events still owed to the
 * broker. SKIP LOCKED lets several processes prune at once without waiting on each other.
 */
export function pruneEvents(q: Queryable, olderThanDays: number, limit: number): Promise<number> {
  return pruneOlderThan(q, { table: 'outbox', key: ['seq'], at: 'published_at', where: 'published_at IS NOT NULL' }, olderThanDays, limit);
}

// ---- event log --------------------------------------------------------------------------------

export type StoredEvent = EventEnvelope & { published_at: string };

export type ListEventsQuery = {
  projectId: string;
  type?: string;
  aggregateId?: string;
  /** Inclusive lower bound on occurred_at. */
  since?: Date | string;
  /** Exclusive upper bound on occurred_at. */
  until?: Date | string;
  limit: number;
  cursor?: string;
};

export type EventPage = { data: StoredEvent[]; nextCursor: string | null };

/** The project's published events, newest first, with keyset pagination on (occurred_at, id). */
export async function listEvents(q: Queryable, query: ListEventsQuery): Promise<EventPage> {
  const where = ['project_id = $1', 'published_at IS NOT NULL'];
  const params: unknown[] = [query.projectId];
  const add = (clause: (n: string) => string, value: unknown) => {
    params.push(value);
    where.push(clause(`$${params.length}`));
  };
  if (query.type !== undefined) {
    if (!isEventType(query.type)) throw invalid(`unknown event type "${query.type}"`, [{ field: 'type', message: 'not in the event catalogue' }]);
    add((p) => `type = ${p}`, query.type);
  }
  // Aggregate ids are uuids written in lower case (the column is text): any case finds them.
  if (query.aggregateId !== undefined) add((p) => `aggregate_id = ${p}`, isUuid(query.aggregateId) ? query.aggregateId.toLowerCase() : query.aggregateId);
  if (query.since !== undefined) add((p) => `occurred_at >= ${p}::timestamptz`, toIso(query.since, 'since'));
  if (query.until !== undefined) add((p) => `occurred_at < ${p}::timestamptz`, toIso(query.until, 'until'));
  if (query.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, query.cursor);
    params.push(c.at, c.id);
    where.push(`(occurred_at, id) < ($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
  }
  const limit = Math.max(1, Math.min(Math.trunc(query.limit), 1000));
  params.push(limit + 1);
  const r = await q.query(
    `SELECT ${ENVELOPE_COLUMNS}, published_at, ${exactTime('occurred_at')} AS cursor_at FROM outbox
     WHERE ${where.join(' AND ')}
     ORDER BY occurred_at DESC, id DESC
     LIMIT $${params.length}`,
    params,
  );
  // The cursor carries occurred_at with its microseconds, not a JS Date (milliseconds), so no event
  // is skipped or repeated at a page boundary.
  const page = toPage(r.rows, limit, CURSOR_LIST, (row) => ({ at: row.cursor_at, id: row.id }), (row) => ({ ...toEnvelope(row), published_at: new Date(row.published_at).toISOString() }) as StoredEvent);
  return { data: page.rows, nextCursor: page.nextCursor };
}

function toIso(v: Date | string, field: string): string {
  return instant(v, field).toISOString();
}

// Relay sleep registrations (migration 011): commits notify only while a relay is registered here.
/** The advisory lock outbox writers hold shared until they end (two-int key space). */
const WAKEUP_LOCK = [1986097264, 1] as const;

/** Registers (or refreshes) a relay that is about to sleep; drops registrations of dead relays. */
export async function registerSleeper(q: Queryable, relayId: string): Promise<void> {
  await q.query(
    `WITH stale AS (DELETE FROM outbox_relay_sleepers WHERE seen_at < now() - interval '5 minutes' AND relay_id <> $1)
     INSERT INTO outbox_relay_sleepers (relay_id) VALUES ($1) ON CONFLICT (relay_id) DO UPDATE SET seen_at = now()`,
    [relayId],
  );
}

export async function unregisterSleeper(q: Queryable, relayId: string): Promise<void> {
  await q.query('DELETE FROM outbox_relay_sleepers WHERE relay_id = $1', [relayId]);
}

/**
 * True when no outbox writer is in progress: every writer that started before the registration
 * has ended, so it either committed (a claim sees its rows) or sees the registration (and
 * notifies). Writers hold the lock shared until they end; this only tries it exclusively, for the
 * instant of one statement, so it never makes a writer wait. False: try again later.
 */
export async function writersBarrier(q: Queryable): Promise<boolean> {
  const r = await q.query<{ ok: boolean }>('SELECT pg_try_advisory_xact_lock($1, $2) AS ok', [...WAKEUP_LOCK]);
  return r.rows[0].ok;
}
