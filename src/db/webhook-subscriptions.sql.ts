// Queries on `webhook_subscriptions`. Secrets stay sealed here (strings the service and the
// dispatcher open with SECRET_KEY).
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, type Page } from './keyset.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'webhook-subscriptions';

export type SubscriptionRecord = {
  id: string;
  projectId: string;
  name: string | null;
  url: string;
  events: string[];
  headers: Record<string, string>;
  /** Sealed. */
  secret: string;
  /** Sealed; signs too until previousSecretExpiresAt. */
  previousSecret: string | null;
  previousSecretExpiresAt: Date | null;
  maxAttempts: number | null;
  timeoutSeconds: number | null;
  rateLimitPerSecond: number | null;
  active: boolean;
  paused: boolean;
  disabledAt: Date | null;
  disabledReason: string | null;
  successCount: number;
  failureCount: number;
  lastSuccessAt: Date | null;
  lastFailureAt: Date | null;
  failingSince: Date | null;
  lastStatusCode: number | null;
  lastError: string | null;
  createdAt: Date;
  updatedAt: Date;
};

const COLUMNS = `id, project_id, name, url, events, headers, secret, previous_secret, previous_secret_expires_at,
  max_attempts, timeout_seconds, rate_limit_per_second, active, paused, disabled_at, disabled_reason,
  success_count, failure_count, last_success_at, last_failure_at, failing_since, last_status_code, last_error,
  created_at, updated_at`;

const date = (v: unknown): Date | null => (v === null || v === undefined ? null : new Date(v as string));

export function toSubscription(r: Row): SubscriptionRecord {
  return {
    id: r.id,
    projectId: r.project_id,
    name: r.name ?? null,
    url: r.url,
    events: r.events ?? [],
    headers: r.headers ?? {},
    secret: r.secret,
    previousSecret: r.previous_secret ?? null,
    previousSecretExpiresAt: date(r.previous_secret_expires_at),
    maxAttempts: r.max_attempts ?? null,
    timeoutSeconds: r.timeout_seconds ?? null,
    rateLimitPerSecond: r.rate_limit_per_second ?? null,
    active: r.active,
    paused: r.paused,
    disabledAt: date(r.disabled_at),
    disabledReason: r.disabled_reason ?? null,
    successCount: Number(r.success_count),
    failureCount: Number(r.failure_count),
    lastSuccessAt: date(r.last_success_at),
    lastFailureAt: date(r.last_failure_at),
    failingSince: date(r.failing_since),
    lastStatusCode: r.last_status_code ?? null,
    lastError: r.last_error ?? null,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

export type NewSubscription = Pick<
  SubscriptionRecord,
  'id' | 'projectId' | 'name' | 'url' | 'events' | 'headers' | 'secret' | 'maxAttempts' | 'timeoutSeconds' | 'rateLimitPerSecond' | 'active'
>;

export async function insertSubscription(tx: Queryable, s: NewSubscription): Promise<SubscriptionRecord> {
  const r = await tx.query(
    `INSERT INTO webhook_subscriptions (id, project_id, name, url, events, headers, secret, max_attempts, timeout_seconds, rate_limit_per_second, active)
     VALUES ($1, $2, $3, $4, $5::text[], $6::jsonb, $7, $8, $9, $10, $11)
     RETURNING ${COLUMNS}`,
    [s.id, s.projectId, s.name, s.url, s.events, JSON.stringify(s.headers), s.secret, s.maxAttempts, s.timeoutSeconds, s.rateLimitPerSecond, s.active],
  );
  return toSubscription(r.rows[0]);
}

export async function findSubscription(q: Queryable, projectId: string, id: string, lock = false): Promise<SubscriptionRecord | undefined> {
  const r = await q.query(`SELECT ${COLUMNS} FROM webhook_subscriptions WHERE project_id = $1 AND id = $2${lock ? ' FOR UPDATE' : ''}`, [projectId, id]);
  return r.rows[0] ? toSubscription(r.rows[0]) : undefined;
}

export async function listSubscriptions(q: Queryable, query: { projectId: string; limit?: number; cursor?: string }): Promise<Page<SubscriptionRecord>> {
  const params: unknown[] = [query.projectId];
  let after = '';
  if (query.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, query.cursor);
    params.push(c.at, c.id);
    after = 'AND (created_at, id) < ($2::timestamptz, $3::uuid)';
  }
  const limit = pageSize(query.limit);
  params.push(limit + 1);
  const r = await q.query(
    `SELECT ${COLUMNS}, ${exactTime('created_at')} AS k_at FROM webhook_subscriptions
     WHERE project_id = $1 ${after}
     ORDER BY created_at DESC, id DESC
     LIMIT $${params.length}`,
    params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (row) => ({ at: row.k_at, id: row.id }), toSubscription);
}

export type SubscriptionChanges = Partial<
  Pick<SubscriptionRecord, 'name' | 'url' | 'events' | 'headers' | 'maxAttempts' | 'timeoutSeconds' | 'rateLimitPerSecond' | 'active' | 'paused' | 'secret' | 'previousSecret' | 'previousSecretExpiresAt'>
>;

const COLUMN_OF: Record<keyof SubscriptionChanges, [string, string]> = {
  name: ['name', ''],
  url: ['url', ''],
  events: ['events', '::text[]'],
  headers: ['headers', '::jsonb'],
  maxAttempts: ['max_attempts', ''],
  timeoutSeconds: ['timeout_seconds', ''],
  rateLimitPerSecond: ['rate_limit_per_second', ''],
  active: ['active', ''],
  paused: ['paused', ''],
  secret: ['secret', ''],
  previousSecret: ['previous_secret', ''],
  previousSecretExpiresAt: ['previous_secret_expires_at', '::timestamptz'],
};

/**
 * Applies `changes`. Turning `active` on (from off) clears the disable reason and the failing streak (the
 * user says the endpoint is fixed); turning it off by hand records no reason. Resuming a paused
 * subscription that was failing starts its streak again from now: no attempt was made while it
 * was paused, and a streak counted through the pause would disable it at the next pass, ending
 * every delivery that had waited.
 */
export async function updateSubscription(tx: Queryable, projectId: string, id: string, changes: SubscriptionChanges): Promise<SubscriptionRecord | undefined> {
  const params: unknown[] = [projectId, id];
  const sets = ['updated_at = now()'];
  let urlParam: string | undefined;
  for (const [key, value] of Object.entries(changes) as Array<[keyof SubscriptionChanges, unknown]>) {
    if (value === undefined) continue;
    const [column, cast] = COLUMN_OF[key];
    params.push(key === 'headers' ? JSON.stringify(value) : value instanceof Date ? value.toISOString() : value);
    sets.push(`${column} = $${params.length}${cast}`);
    if (key === 'url') urlParam = `$${params.length}`;
  }
  // (In SET, `active`, `url` and `paused` are the values before this update.) Turning a disabled
  // subscription back on starts it afresh; `active: true` on one already active (a client that
  // sends every field on each PATCH) leaves its streak alone. Another URL is another endpoint: the
  // old one's failing streak is not held against it.
  if (changes.active === true) sets.push('disabled_at = CASE WHEN active THEN disabled_at END', 'disabled_reason = CASE WHEN active THEN disabled_reason END');
  const restart = [
    ...(changes.active === true ? ['WHEN NOT active THEN NULL'] : []),
    ...(urlParam ? [`WHEN url IS DISTINCT FROM ${urlParam} THEN NULL`] : []),
    ...(changes.paused === false ? ['WHEN paused AND failing_since IS NOT NULL THEN now()'] : []),
  ];
  if (restart.length > 0) sets.push(`failing_since = CASE ${restart.join(' ')} ELSE failing_since END`);
  const r = await tx.query(`UPDATE webhook_subscriptions SET ${sets.join(', ')} WHERE project_id = $1 AND id = $2 RETURNING ${COLUMNS}`, params);
  return r.rows[0] ? toSubscription(r.rows[0]) : undefined;
}

/**
 * NOTIFY channel: a subscription's URL changed or it was turned back on, payload its id (migration
 * 016); it was turned off or deleted, payload ENDPOINT_GONE and its id (migration 038).
 */
export const ENDPOINT_CHANGES = 'ventros_webhook_endpoints';
export const ENDPOINT_GONE = 'gone:';

/**
 * Deliveries of a subscription that wait for a later attempt (a retry's back-off, an open circuit)
 * are due now: its endpoint changed (another URL, or turned back on by hand), so what kept them
 * waiting was learnt of the old one. Only while it is active (a claim would end them otherwise).
 * Returns how many.
 */
export async function bringDeliveriesForward(q: Queryable, subscriptionId: string): Promise<number> {
  const r = await q.query(
    `UPDATE webhook_deliveries d SET next_attempt_at = now(), enqueued_at = NULL, updated_at = now()
     FROM webhook_subscriptions s
     WHERE s.id = $1 AND s.active AND d.subscription_id = s.id AND d.status IN ('pending', 'retrying') AND d.next_attempt_at > now()`,
    [subscriptionId],
  );
  return r.rowCount;
}

export async function deleteSubscription(tx: Queryable, projectId: string, id: string): Promise<boolean> {
  const r = await tx.query('DELETE FROM webhook_subscriptions WHERE project_id = $1 AND id = $2', [projectId, id]);
  return r.rowCount > 0;
}

/** The project's active subscriptions, for the fan-out (which matches filters in code). */
export async function activeSubscriptions(q: Queryable, projectId: string): Promise<Array<{ id: string; events: string[] }>> {
  const r = await q.query<{ id: string; events: string[] }>('SELECT id, events FROM webhook_subscriptions WHERE project_id = $1 AND active', [projectId]);
  return r.rows;
}

export type DisabledSubscription = {
  id: string;
  projectId: string;
  url: string;
  lastStatusCode: number | null;
  lastError: string | null;
  failingSince: Date | null;
};

const DISABLED_COLUMNS = 'id, project_id, url, last_status_code, last_error, failing_since';
const toDisabled = (r: Row): DisabledSubscription => ({
  id: r.id,
  projectId: r.project_id,
  url: r.url,
  lastStatusCode: r.last_status_code ?? null,
  lastError: r.last_error ?? null,
  failingSince: date(r.failing_since),
});

/**
 * Disables one subscription (410 Gone) and ends its waiting deliveries: nothing will send them,
 * and `recover` re-sends them once the endpoint is back. Returns undefined if it was not active.
 */
export async function disableSubscription(
  tx: Queryable,
  id: string,
  reason: string,
  last: { statusCode: number | null; error: string | null },
): Promise<DisabledSubscription | undefined> {
  const r = await tx.query(
    `UPDATE webhook_subscriptions SET active = false, disabled_at = now(), disabled_reason = $2,
       last_status_code = COALESCE($3, last_status_code), last_error = COALESCE($4, last_error), updated_at = now()
     WHERE id = $1 AND active RETURNING ${DISABLED_COLUMNS}`,
    [id, reason, last.statusCode, last.error],
  );
  if (!r.rows[0]) return undefined;
  await endWaitingDeliveries(tx, [id], `subscription disabled: ${reason}`);
  return toDisabled(r.rows[0]);
}

/**
 * Disables active, unpaused subscriptions whose every attempt has failed for `days` days: failing
 * since then, and still failing at the end of them. A quiet endpoint is not counted as failing
 * through days it was sent nothing (a workflow fixed a day after its last failed attempt, then no
 * events for a week, was disabled although it worked).
 */
export async function disableFailingSubscriptions(tx: Queryable, days: number, limit = 100): Promise<DisabledSubscription[]> {
  const r = await tx.query(
    `UPDATE webhook_subscriptions s SET active = false, disabled_at = now(), updated_at = now(),
       disabled_reason = 'every attempt failed for ' || $1::int || ' days'
     WHERE s.id IN (SELECT id FROM webhook_subscriptions
                    WHERE active AND NOT paused AND failing_since < now() - make_interval(days => $1::int)
                      AND last_failure_at >= failing_since + make_interval(days => $1::int)
                    ORDER BY failing_since LIMIT $2 FOR UPDATE SKIP LOCKED)
     RETURNING ${DISABLED_COLUMNS}`,
    [days, limit],
  );
  if (r.rows.length) await endWaitingDeliveries(tx, r.rows.map((x) => x.id), 'subscription disabled: failing for too long');
  return r.rows.map(toDisabled);
}

async function endWaitingDeliveries(tx: Queryable, subscriptionIds: string[], reason: string): Promise<void> {
  await tx.query(
    `UPDATE webhook_deliveries SET status = 'dead', next_attempt_at = NULL, manual = false, last_error = $2, updated_at = now()
     WHERE subscription_id = ANY($1::uuid[]) AND status IN ('pending', 'retrying')`,
    [subscriptionIds, reason],
  );
}

/** Health counters gathered by a dispatcher since its last flush, per subscription. */
export type HealthDelta = {
  subscriptionId: string;
  successes: number;
  failures: number;
  lastSuccessAt: Date | null;
  lastFailureAt: Date | null;
  /** The first failure after this batch's last success (or its first failure, if none succeeded). */
  firstFailureAt: Date | null;
  lastStatusCode: number | null;
  lastError: string | null;
};

/**
 * Adds the deltas of several subscriptions in one statement. Dispatchers flush out of order, so
 * the times merge with GREATEST, failing_since keeps the earliest failure newer than the latest
 * success anyone has seen, and the last status code and error are a batch's only when its latest
 * outcome is at least as new as the stored one (a batch with no outcome time, only 429s, counts as
 * new): an older success flushed late does not show a failing endpoint as answering 200.
 */
const BATCH_IS_NEWER = `COALESCE(GREATEST(b.last_success_at, b.last_failure_at), 'infinity'::timestamptz)
  >= COALESCE(GREATEST(s.last_success_at, s.last_failure_at), '-infinity'::timestamptz)`;

export async function addHealth(q: Queryable, deltas: readonly HealthDelta[]): Promise<void> {
  if (deltas.length === 0) return;
  const iso = (d: Date | null) => (d ? d.toISOString() : null);
  await q.query(
    `UPDATE webhook_subscriptions s SET
       success_count = s.success_count + b.successes,
       failure_count = s.failure_count + b.failures,
       last_success_at = GREATEST(s.last_success_at, b.last_success_at),
       last_failure_at = GREATEST(s.last_failure_at, b.last_failure_at),
       failing_since = (SELECT min(x) FROM (VALUES (s.failing_since), (b.first_failure_at)) v(x)
                        WHERE x > COALESCE(GREATEST(s.last_success_at, b.last_success_at), '-infinity'::timestamptz)),
       last_status_code = CASE WHEN ${BATCH_IS_NEWER} THEN COALESCE(b.last_status_code, s.last_status_code) ELSE s.last_status_code END,
       last_error = CASE WHEN NOT ${BATCH_IS_NEWER} THEN s.last_error
                         WHEN b.last_failure_at IS NULL OR b.last_success_at > b.last_failure_at THEN NULL ELSE b.last_error END
     FROM unnest($1::uuid[], $2::int[], $3::int[], $4::timestamptz[], $5::timestamptz[], $6::timestamptz[], $7::int[], $8::text[])
       AS b(id, successes, failures, last_success_at, last_failure_at, first_failure_at, last_status_code, last_error)
     WHERE s.id = b.id`,
    [
      deltas.map((d) => d.subscriptionId),
      deltas.map((d) => d.successes),
      deltas.map((d) => d.failures),
      deltas.map((d) => iso(d.lastSuccessAt)),
      deltas.map((d) => iso(d.lastFailureAt)),
      deltas.map((d) => iso(d.firstFailureAt)),
      deltas.map((d) => d.lastStatusCode),
      deltas.map((d) => d.lastError),
    ],
  );
}
