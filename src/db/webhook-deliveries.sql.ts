// Queries on `webhook_deliveries` and `webhook_attempts` that the fan-out and the operations API
// use. The dispatcher's claim/record/schedule statements are in webhook-dispatch.sql.ts.
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, type Page } from './keyset.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'webhook-deliveries';

export const DELIVERY_STATUSES = ['pending', 'sending', 'retrying', 'succeeded', 'dead'] as const;
export type DeliveryStatus = (typeof DELIVERY_STATUSES)[number];

export type DeliveryRecord = {
  id: string;
  projectId: string;
  subscriptionId: string;
  eventId: string;
  eventType: string;
  status: DeliveryStatus;
  attempts: number;
  nextAttemptAt: Date | null;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: Date;
  updatedAt: Date;
};

export type AttemptRecord = {
  n: number;
  at: Date;
  statusCode: number | null;
  durationMs: number | null;
  errorClass: string;
  error: string | null;
  responseExcerpt: string | null;
};

const COLUMNS = `id, project_id, subscription_id, event_id, event_type, status, attempts, next_attempt_at,
  last_status_code, last_error, created_at, updated_at`;

function toDelivery(r: Row): DeliveryRecord {
  return {
    id: r.id,
    projectId: r.project_id,
    subscriptionId: r.subscription_id,
    eventId: r.event_id,
    eventType: r.event_type,
    status: r.status,
    attempts: r.attempts,
    nextAttemptAt: r.next_attempt_at ? new Date(r.next_attempt_at) : null,
    lastStatusCode: r.last_status_code ?? null,
    lastError: r.last_error ?? null,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

export type NewDelivery = {
  id: string;
  subscriptionId: string;
  eventId: string;
  eventType: string;
  /** The signed-and-sent bytes, built once from the event. */
  body: string;
};

/**
 * Inserts deliveries of a project, due now and marked enqueued (the caller sends them right after
 * commit; a send that fails is handed back with `clearEnqueued`), in one statement. A (subscription,
 * event) pair that exists already is skipped, and so is a subscription no longer active (the caller
 * may hold a slightly stale list): only the rows returned are new and need sending.
 *
 * Should the caller stop between the commit and the send, the scheduler finds the marks without a
 * message once the webhook queues are seen empty, or after its backstop (`releaseGone`): a journal
 * entry, confirmed after the send as the scheduler's own marks are (`takeDue`), would cost the
 * fan-out — every new delivery — a second write.
 *
 * `manual`: asked for by a person (a test event): it goes past an open circuit, also when a cap or
 * the rate limit puts it off (migration 039).
 */
export async function insertDeliveries(tx: Queryable, projectId: string, rows: readonly NewDelivery[], opts: { manual?: boolean } = {}): Promise<Array<{ id: string; subscriptionId: string }>> {
  return insertRows(tx, projectId, rows, undefined, opts.manual === true);
}

/**
 * The fan-out's write in one statement: records the events as processed by `consumer` and
 * creates the deliveries of those that were not processed before (a redelivered event creates
 * nothing). Returns the deliveries created.
 */
export async function insertDeliveriesOnce(
  tx: Queryable,
  projectId: string,
  consumer: string,
  rows: readonly NewDelivery[],
): Promise<Array<{ id: string; subscriptionId: string }>> {
  return insertRows(tx, projectId, rows, consumer);
}

async function insertRows(tx: Queryable, projectId: string, rows: readonly NewDelivery[], onceFor?: string, manual = false): Promise<Array<{ id: string; subscriptionId: string }>> {
  if (rows.length === 0) return [];
  // An event's body is the same for each of its subscriptions: send it once and index into it
  // (array parameters are escaped character by character, and bodies are the bulk of the bytes).
  const bodies: string[] = [];
  const index = new Map<string, number>();
  const bodyIdx = rows.map((x) => {
    let i = index.get(x.body);
    if (i === undefined) index.set(x.body, (i = bodies.push(x.body)));
    return i;
  });
  const params: unknown[] = [projectId, rows.map((x) => x.id), rows.map((x) => x.subscriptionId), rows.map((x) => x.eventId), rows.map((x) => x.eventType), bodyIdx, bodies];
  let fresh = '';
  if (onceFor !== undefined) {
    params.push(onceFor, [...new Set(rows.map((x) => x.eventId))]);
    fresh = `WITH fresh AS (
       INSERT INTO processed_events (consumer, event_id) SELECT $8, unnest($9::uuid[])
       ON CONFLICT (consumer, event_id) DO NOTHING RETURNING event_id
     ) `;
  }
  const r = await tx.query<{ id: string; subscription_id: string }>(
    `${fresh}INSERT INTO webhook_deliveries (id, project_id, subscription_id, event_id, event_type, body, status, next_attempt_at, enqueued_at, manual)
     SELECT t.id, $1::uuid, t.sub, t.event_id, t.event_type, ($7::text[])[t.body_idx], 'pending', now(), now(), ${manual ? 'true' : 'false'}
     FROM unnest($2::uuid[], $3::uuid[], $4::uuid[], $5::text[], $6::int[]) AS t(id, sub, event_id, event_type, body_idx)
     JOIN webhook_subscriptions s ON s.id = t.sub AND s.project_id = $1::uuid AND s.active
     ${onceFor !== undefined ? 'WHERE t.event_id IN (SELECT event_id FROM fresh)' : ''}
     ON CONFLICT (subscription_id, event_id) DO NOTHING
     RETURNING id, subscription_id`,
    params,
  );
  return r.rows.map((x) => ({ id: x.id, subscriptionId: x.subscription_id }));
}

export type DeliveryQuery = {
  projectId: string;
  subscriptionId?: string;
  status?: DeliveryStatus;
  limit?: number;
  cursor?: string;
};

/** Newest first, keyset-paginated on (created_at, id). */
export async function listDeliveries(q: Queryable, query: DeliveryQuery): Promise<Page<DeliveryRecord>> {
  const params: unknown[] = [query.projectId];
  const where = ['project_id = $1'];
  const add = (clause: (p: string) => string, value: unknown) => {
    params.push(value);
    where.push(clause(`$${params.length}`));
  };
  if (query.subscriptionId !== undefined) add((p) => `subscription_id = ${p}::uuid`, query.subscriptionId);
  if (query.status !== undefined) add((p) => `status = ${p}`, query.status);
  if (query.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, query.cursor);
    params.push(c.at, c.id);
    where.push(`(created_at, id) < ($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
  }
  const limit = pageSize(query.limit);
  params.push(limit + 1);
  const r = await q.query(
    `SELECT ${COLUMNS}, ${exactTime('created_at')} AS k_at FROM webhook_deliveries
     WHERE ${where.join(' AND ')}
     ORDER BY created_at DESC, id DESC
     LIMIT $${params.length}`,
    params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (row) => ({ at: row.k_at, id: row.id }), toDelivery);
}

export async function findDelivery(q: Queryable, projectId: string, id: string): Promise<DeliveryRecord | undefined> {
  const r = await q.query(`SELECT ${COLUMNS} FROM webhook_deliveries WHERE project_id = $1 AND id = $2`, [projectId, id]);
  return r.rows[0] ? toDelivery(r.rows[0]) : undefined;
}

export async function listAttempts(q: Queryable, deliveryId: string): Promise<AttemptRecord[]> {
  const r = await q.query(
    `SELECT n, at, status_code, duration_ms, error_class, error, response_excerpt FROM webhook_attempts
     WHERE delivery_id = $1 ORDER BY n`,
    [deliveryId],
  );
  return r.rows.map((x) => ({
    n: x.n,
    at: new Date(x.at),
    statusCode: x.status_code ?? null,
    durationMs: x.duration_ms ?? null,
    errorClass: x.error_class,
    error: x.error ?? null,
    responseExcerpt: x.response_excerpt ?? null,
  }));
}

/**
 * Makes one delivery due now (manual retry). Not while an attempt is out: that one's outcome
 * would race ours. The attempt count goes on. A finished delivery (dead or succeeded) gets exactly
 * one more attempt, whatever its history: `attempts_before_recover` is set to the number that
 * attempt will take, which marks it as the delivery's last (see `decideNext` and
 * `reclaimExpired`). A delivery still waiting for a retry is only brought forward: it keeps the
 * attempts it has left, and stays `retrying` (it is one, listed with them). Marked enqueued as
 * `insertDeliveries` does (the caller sends it after commit), and manual: it goes past an open
 * circuit until its attempt is recorded, also when a cap or the rate limit puts it off first.
 */
export async function requeueDelivery(tx: Queryable, projectId: string, id: string): Promise<DeliveryRecord | undefined> {
  const r = await tx.query(
    `UPDATE webhook_deliveries SET status = CASE WHEN status = 'retrying' THEN 'retrying' ELSE 'pending' END,
       next_attempt_at = now(), enqueued_at = now(), held = false, manual = true,
       locked_until = NULL, updated_at = now(), attempts_before_recover = CASE WHEN status IN ('dead', 'succeeded') THEN attempts + 1 ELSE attempts_before_recover END
     WHERE project_id = $1 AND id = $2 AND status <> 'sending'
     RETURNING ${COLUMNS}`,
    [projectId, id],
  );
  return r.rows[0] ? toDelivery(r.rows[0]) : undefined;
}

/**
 * Makes every dead delivery of a subscription created since `since` due now (recover), each with
 * the whole retry schedule again (migration 022): the schedule counts from the attempts it had —
 * also for one whose manual retry (a single attempt) failed. They are left to the scheduler (not
 * marked enqueued), which puts them on `webhooks.due` a batch at a time within its next pass: a
 * request that recovers a million deliveries writes them once and sends nothing itself. How many.
 */
export async function requeueDead(tx: Queryable, projectId: string, subscriptionId: string, since: Date): Promise<number> {
  const r = await tx.query(
    `UPDATE webhook_deliveries SET status = 'pending', next_attempt_at = now(), enqueued_at = NULL, held = false, manual = false,
       updated_at = now(), attempts_before_recover = attempts
     WHERE project_id = $1 AND subscription_id = $2 AND status = 'dead' AND created_at >= $3::timestamptz`,
    [projectId, subscriptionId, since.toISOString()],
  );
  return r.rowCount;
}

/**
 * Lets the scheduler enqueue these rows again (a send that failed, a subscription resumed):
 * without it they would wait to be taken as lost first (`releaseGone`). A resume (`subscriptionId`)
 * also lets go of the deliveries the scheduler held while the subscription was paused
 * (`holdDeliveries`).
 */
export async function clearEnqueued(q: Queryable, where: { ids?: readonly string[]; subscriptionId?: string }): Promise<void> {
  if (where.ids) {
    if (where.ids.length === 0) return;
    await q.query(`UPDATE webhook_deliveries SET enqueued_at = NULL WHERE id = ANY($1::uuid[]) AND status IN ('pending', 'retrying')`, [where.ids]);
  } else if (where.subscriptionId) {
    await q.query(`UPDATE webhook_deliveries SET enqueued_at = NULL, held = false WHERE subscription_id = $1 AND status IN ('pending', 'retrying')`, [where.subscriptionId]);
  }
}

const HELD_TOO_LONG_ERROR = 'held while its subscription was paused for longer than WEBHOOK_RETENTION_DAYS; resume and recover to send it';

/**
 * Gives up up to `limit` deliveries a paused subscription has held, untouched, for more than
 * `olderThanDays`: they become `dead` (recoverable, and pruned like any dead delivery after as
 * many days again), so a forgotten paused subscription does not grow without bound. Oldest first,
 * through the subscription's list index; a row locked at this moment is left for the next pass.
 */
export async function expireHeldDeliveries(q: Queryable, olderThanDays: number, limit: number): Promise<number> {
  const r = await q.query(
    `UPDATE webhook_deliveries SET status = 'dead', next_attempt_at = NULL, enqueued_at = NULL, manual = false, last_error = $3, updated_at = now()
     WHERE status IN ('pending', 'retrying') AND id = ANY(ARRAY(
       SELECT d.id FROM webhook_subscriptions s JOIN webhook_deliveries d ON d.subscription_id = s.id
       WHERE s.paused AND d.status IN ('pending', 'retrying')
         AND d.created_at < now() - make_interval(days => $1::int) AND d.updated_at < now() - make_interval(days => $1::int)
       ORDER BY d.created_at LIMIT $2
       -- The subscription locked too: one being resumed at this moment is skipped, and one
       -- resumed before the lock is read as it is now (no longer paused).
       FOR UPDATE OF d SKIP LOCKED FOR SHARE OF s SKIP LOCKED))`,
    [olderThanDays, limit, HELD_TOO_LONG_ERROR],
  );
  return r.rowCount;
}

/**
 * Deletes up to `limit` finished deliveries (succeeded or dead: nothing will happen to them unless
 * a user replays one) last changed more than `olderThanDays` ago; their attempts go with them (ON
 * DELETE CASCADE). Call it again while it returns `limit`. Waiting and sending deliveries are
 * never touched, however old (those a paused subscription holds too long are given up first). A row locked at this moment — another sweeper's, or a manual
 * retry making it pending again — is skipped; the status is checked again once the lock is ours.
 * The status list is spelled out to match the partial index `webhook_deliveries_finished`, and the
 * chosen ids are an array so the delete looks them up by primary key instead of hash-joining the
 * whole table.
 */
export async function pruneWebhookDeliveries(q: Queryable, olderThanDays: number, limit: number): Promise<number> {
  const r = await q.query(
    `DELETE FROM webhook_deliveries WHERE status IN ('succeeded', 'dead') AND id = ANY(ARRAY(
       SELECT id FROM webhook_deliveries
       WHERE status IN ('succeeded', 'dead') AND updated_at < now() - make_interval(days => $1::int)
       ORDER BY updated_at LIMIT $2
       FOR UPDATE SKIP LOCKED))`,
    [olderThanDays, limit],
  );
  return r.rowCount;
}
