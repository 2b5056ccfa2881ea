// Queries of the Postgres-backed broker over queue_messages, queue_bindings and queue_consumers.
// Every function takes the connection or transaction first, so a caller that has a transaction
// open (the outbox relay) can publish inside it.
import type { Queryable } from '../db/database.ts';
import { topicPatternToRegex, type Headers, type OutgoingMessage, type QueueSpec, type QueueStats } from './broker.ts';
import { ROUTING_KEY_HEADER, toBuffer } from './dead-letters.sql.ts';

/** NOTIFY channel; the payload is the queue that got messages. */
export const QUEUE_CHANNEL = 'ventros_queue';

export type ClaimedMessage = {
  id: string;
  messageId: string;
  routingKey: string;
  headers: Headers;
  body: Buffer;
  /** Handler failures so far. */
  attempts: number;
  /** Times claimed, this claim included. */
  deliveries: number;
  /** Milliseconds since it was first handed back for a database outage; null if never. */
  outageMs: number | null;
};

/** Identifies one claim: the row, who holds it, and which of its deliveries this is. */
export type Claim = { id: string; consumerId: string; deliveries: number };

const MS = `* interval '1 millisecond'`;

export async function declareBindings(q: Queryable, exchange: string, specs: readonly QueueSpec[]): Promise<void> {
  const rows = specs.flatMap((s) => (s.bindings ?? []).map((p) => [s.name, p, topicPatternToRegex(p)]));
  if (!rows.length) return;
  await q.query(
    `INSERT INTO queue_bindings (exchange, queue, pattern, regex)
     SELECT $1::text, * FROM unnest($2::text[], $3::text[], $4::text[]) ON CONFLICT DO NOTHING`,
    [exchange, rows.map((r) => r[0]), rows.map((r) => r[1]), rows.map((r) => r[2])],
  );
}

// Batches go in as parallel arrays (one statement, one round trip); headers travel as JSON text.
// The notification is sent by the same statement, so it is delivered exactly when the rows commit.
/** Inserts one row per bound queue (once per queue, however many of its patterns match). */
export async function insertPublished(q: Queryable, exchange: string, routingKey: string, msgs: readonly OutgoingMessage[]): Promise<void> {
  if (!msgs.length) return;
  await q.query(
    `WITH ins AS (
       INSERT INTO queue_messages (queue, message_id, routing_key, headers, body)
       SELECT b.queue, m.message_id, $1::text, m.headers::jsonb, m.body
       FROM (SELECT DISTINCT queue FROM queue_bindings WHERE exchange = $2 AND ('.' || $1::text) ~ regex) b
       CROSS JOIN unnest($3::text[], $4::text[], $5::bytea[]) WITH ORDINALITY AS m(message_id, headers, body, n)
       ORDER BY b.queue, m.n
       RETURNING queue)
     SELECT pg_notify('${QUEUE_CHANNEL}', i.queue) FROM (SELECT DISTINCT queue FROM ins) i`,
    [routingKey, exchange, msgs.map((m) => m.messageId), msgs.map((m) => JSON.stringify(m.headers ?? {})), msgs.map((m) => m.body)],
  );
}

/** Inserts into one queue. The routing key is the queue name, unless a replay carries the original. */
export async function insertSent(q: Queryable, queue: string, msgs: readonly OutgoingMessage[]): Promise<void> {
  if (!msgs.length) return;
  const keys: string[] = [];
  const headers: string[] = [];
  for (const m of msgs) {
    const { [ROUTING_KEY_HEADER]: key, ...rest } = m.headers ?? {};
    keys.push(key || queue);
    headers.push(JSON.stringify(rest));
  }
  await q.query(
    `WITH ins AS (
       INSERT INTO queue_messages (queue, message_id, routing_key, headers, body)
       SELECT $1::text, m.message_id, m.routing_key, m.headers::jsonb, m.body
       FROM unnest($2::text[], $3::text[], $4::text[], $5::bytea[]) WITH ORDINALITY AS m(message_id, routing_key, headers, body, n)
       ORDER BY m.n
       RETURNING 1)
     SELECT pg_notify('${QUEUE_CHANNEL}', $1::text) WHERE EXISTS (SELECT 1 FROM ins)`,
    [queue, msgs.map((m) => m.messageId), keys, headers, msgs.map((m) => m.body)],
  );
}

type ClaimedRow = { id: string; message_id: string; routing_key: string; headers: Headers | null; body: Uint8Array; attempts: number; deliveries: number; outage_ms: number | null };

/**
 * Claims up to `limit` due messages whose lease is free, oldest first, and commits the lease.
 * `running`: rows whose handler this consumer is still running. Their lease can run out while
 * they run (renewals stalled: a blocked event loop, a slow database); claimed again here they
 * would run twice at once in one consumer, and the first run's outcome would no longer match
 * its claim. Another consumer may still take them, as it would a dead consumer's.
 */
export async function claimMessages(
  q: Queryable,
  c: { queue: string; limit: number; leaseMs: number; consumerId: string; running?: readonly string[] },
): Promise<ClaimedMessage[]> {
  const r = await q.query<ClaimedRow>(
    `WITH c AS (
       SELECT id FROM queue_messages
       WHERE queue = $1 AND available_at <= now() AND (locked_until IS NULL OR locked_until <= now())
         AND NOT (id = ANY($5::bigint[]))
       ORDER BY available_at, id LIMIT $2 FOR UPDATE SKIP LOCKED)
     UPDATE queue_messages m SET locked_until = now() + $3::int ${MS}, locked_by = $4, deliveries = m.deliveries + 1
     FROM c WHERE m.id = c.id
     RETURNING m.id::text AS id, m.message_id, m.routing_key, m.headers, m.body, m.attempts, m.deliveries,
       (extract(epoch FROM now() - m.outage_since) * 1000)::float8 AS outage_ms`,
    [c.queue, c.limit, c.leaseMs, c.consumerId, c.running ?? []],
  );
  return r.rows
    .sort((a, b) => (BigInt(a.id) < BigInt(b.id) ? -1 : 1))
    .map((x) => ({
      id: x.id,
      messageId: x.message_id,
      routingKey: x.routing_key,
      headers: x.headers ?? {},
      body: toBuffer(x.body),
      attempts: x.attempts,
      deliveries: x.deliveries,
      outageMs: x.outage_ms === null ? null : Number(x.outage_ms),
    }));
}

/**
 * Milliseconds until the next message of the queue could become claimable (a retry coming due,
 * another consumer's lease running out), ignoring our own claims; null when the queue is empty.
 */
export async function nextDueMs(q: Queryable, queue: string, consumerId: string): Promise<number | null> {
  // The min over the queue's rows of greatest(available_at, coalesce(locked_until, available_at)),
  // read from the claim index (queue, available_at, id) without visiting the whole queue (a min of
  // that expression read every row, thousands waiting in retry included, after each claim that did
  // not fill its slots):
  // - a row without a lease is due at its available_at: the index in order, stopping at the first
  //   such row (past the leased ones before it);
  // - only when none is due yet, the leased rows, at the later of their two times. A leased row was
  //   due when claimed (a retry or a hand-back clears the lease as it moves available_at), so they
  //   are all in the index's range up to now — and then nothing else is: a bounded range of the
  //   messages in flight. (CASE runs that subquery only when its branch is taken.)
  const r = await q.query<{ ms: number | null }>(
    `WITH free AS (
       SELECT min(available_at) AS at FROM queue_messages
       WHERE queue = $1 AND locked_until IS NULL AND locked_by IS DISTINCT FROM $2)
     SELECT ceil(extract(epoch FROM
       CASE WHEN free.at <= now() THEN free.at
       ELSE least(free.at, (SELECT min(greatest(available_at, locked_until)) FROM queue_messages
                            WHERE queue = $1 AND available_at <= now() AND locked_until IS NOT NULL AND locked_by IS DISTINCT FROM $2))
       END - now()) * 1000)::int AS ms FROM free`,
    [queue, consumerId],
  );
  return r.rows[0]?.ms ?? null;
}

/** Done: the row goes, whoever holds it now (a slow duplicate handler only finds it gone). */
export async function ackMessage(q: Queryable, id: string): Promise<void> {
  await q.query('DELETE FROM queue_messages WHERE id = $1::bigint', [id]);
}

/** Counts a failure and frees the lease until now + delay; no-op when the claim is no longer ours. */
export async function scheduleRetry(q: Queryable, c: Claim, delayMs: number, error: string): Promise<void> {
  await q.query(
    `UPDATE queue_messages SET attempts = attempts + 1, available_at = now() + $2::int ${MS},
       locked_until = NULL, locked_by = NULL, last_error = $3
     WHERE id = $1::bigint AND locked_by = $4 AND deliveries = $5`,
    [c.id, delayMs, error, c.consumerId, c.deliveries],
  );
}

/**
 * Gives a claimed row back for later without spending an attempt or a delivery: its handler could
 * not reach the database, which is no fault of the message. The first hand-back is remembered
 * (outage_since), so that such rounds can be bounded.
 */
export async function handBack(q: Queryable, c: Claim, delayMs: number, error: string): Promise<void> {
  await q.query(
    `UPDATE queue_messages SET deliveries = deliveries - 1, available_at = now() + $2::int ${MS},
       outage_since = coalesce(outage_since, now()),
       locked_until = NULL, locked_by = NULL, last_error = $3
     WHERE id = $1::bigint AND locked_by = $4 AND deliveries = $5`,
    [c.id, delayMs, error, c.consumerId, c.deliveries],
  );
}

/** Removes a claimed row (to dead-letter it); false when the claim is no longer ours. */
export async function deleteClaimed(q: Queryable, c: Claim): Promise<boolean> {
  const r = await q.query('DELETE FROM queue_messages WHERE id = $1::bigint AND locked_by = $2 AND deliveries = $3', [c.id, c.consumerId, c.deliveries]);
  return r.rowCount > 0;
}

/** Hands back claims no handler started; they do not count as deliveries. */
export async function releaseClaims(q: Queryable, ids: readonly string[], consumerId: string): Promise<void> {
  await q.query(
    `UPDATE queue_messages SET locked_until = NULL, locked_by = NULL, deliveries = deliveries - 1
     WHERE id = ANY($1::bigint[]) AND locked_by = $2`,
    [ids, consumerId],
  );
}

export async function renewLeases(q: Queryable, ids: readonly string[], consumerId: string, leaseMs: number): Promise<void> {
  await q.query(`UPDATE queue_messages SET locked_until = now() + $3::int ${MS} WHERE id = ANY($1::bigint[]) AND locked_by = $2`, [ids, consumerId, leaseMs]);
}

export async function heartbeatConsumer(q: Queryable, consumerId: string, queue: string): Promise<void> {
  await q.query(
    `INSERT INTO queue_consumers (consumer_id, queue) VALUES ($1, $2) ON CONFLICT (consumer_id) DO UPDATE SET heartbeat_at = now()`,
    [consumerId, queue],
  );
}

export async function removeConsumer(q: Queryable, consumerId: string): Promise<void> {
  await q.query('DELETE FROM queue_consumers WHERE consumer_id = $1', [consumerId]);
}

/** Forgets consumers of processes that died long ago (they never unregistered). */
export async function pruneConsumers(q: Queryable): Promise<void> {
  await q.query(`DELETE FROM queue_consumers WHERE heartbeat_at < now() - interval '1 hour'`);
}

/**
 * Per queue: depth (ready or in flight), retrying (failed, waiting for their delay), consumers
 * whose heartbeat is younger than `liveMs`, dead letters not replayed. Without `queues`: every
 * queue known from bindings, messages, dead letters or live consumers.
 */
export async function queueStats(q: Queryable, queues: readonly string[] | undefined, liveMs: number): Promise<QueueStats[]> {
  const names = queues
    ? 'SELECT DISTINCT unnest($2::text[]) AS queue'
    : `SELECT queue FROM queue_bindings UNION SELECT queue FROM queue_messages UNION SELECT queue FROM dead_letters
       UNION SELECT queue FROM queue_consumers WHERE heartbeat_at > now() - $1::int ${MS}`;
  const r = await q.query<{ queue: string; depth: number; retrying: number; consumers: number; dead_letters: number }>(
    `WITH names AS (${names})
     SELECT n.queue,
       (SELECT count(*) FROM queue_messages m WHERE m.queue = n.queue AND NOT (m.attempts > 0 AND m.available_at > now()))::int AS depth,
       (SELECT count(*) FROM queue_messages m WHERE m.queue = n.queue AND m.attempts > 0 AND m.available_at > now())::int AS retrying,
       (SELECT count(*) FROM queue_consumers c WHERE c.queue = n.queue AND c.heartbeat_at > now() - $1::int ${MS})::int AS consumers,
       (SELECT count(*) FROM dead_letters d WHERE d.queue = n.queue AND d.replayed_at IS NULL)::int AS dead_letters
     FROM names n ORDER BY n.queue`,
    queues ? [liveMs, [...queues]] : [liveMs],
  );
  const byName = new Map(r.rows.map((x) => [x.queue, { queue: x.queue, depth: x.depth, retrying: x.retrying, consumers: x.consumers, deadLetters: x.dead_letters }]));
  return queues ? [...new Set(queues)].map((name) => byName.get(name)!) : [...byName.values()];
}
