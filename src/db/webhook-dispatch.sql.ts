// The statements that move a delivery through its states: claim → record (dispatcher), postpone
// (circuit open, rate or in-flight limit: no attempt spent), and the scheduler's two sweeps
// (expired leases, due rows). Each takes a batch and is one statement, so a busy dispatcher pays
// one round trip and one commit for many deliveries. These run outside tenant transactions: the
// ids come from our own queue, and the work crosses projects.
import type { Queryable } from './database.ts';

const MS = `* interval '1 millisecond'`;

/** A delivery claimed for one attempt, with what the attempt needs from its subscription. */
export type ClaimedDelivery = {
  id: string;
  projectId: string;
  subscriptionId: string;
  /** The subscription's endpoint version (migration 031): another URL, or turned back on by hand, raises it. */
  endpointVersion: number;
  eventId: string;
  body: string;
  /** `sending`, or `dead` when the subscription turned out to be disabled. */
  status: 'sending' | 'dead';
  /** The number of this attempt (attempts so far, this one included). */
  attempts: number;
  /**
   * Attempts made before the delivery was last recovered: its retry schedule counts from there.
   * At least `attempts` after a manual retry of a finished delivery (see `requeueDelivery`): this
   * attempt is its last.
   */
  attemptsBeforeRecover: number;
  url: string;
  headers: Record<string, string>;
  /** Sealed secrets: the current one, then (while still valid) the sealed list of those it replaced. */
  secrets: string[];
  maxAttempts: number | null;
  timeoutSeconds: number | null;
  rateLimitPerSecond: number | null;
  /** Asked for by a person (a manual retry, a test event): past an open circuit (migration 039). */
  manual: boolean;
};

/**
 * Claims the due, claimable deliveries among `ids`: status → sending, attempts + 1, a lease of
 * the subscription's timeout + `leaseMarginMs`. Ids that are not due, already taken, locked by
 * someone else at this instant, or of a paused subscription are left alone (their message was a
 * duplicate, or another message will come). A delivery of a disabled subscription becomes dead.
 */
export async function claimDeliveries(q: Queryable, ids: readonly string[], opts: { defaultTimeoutMs: number; leaseMarginMs: number }): Promise<ClaimedDelivery[]> {
  if (ids.length === 0) return [];
  const r = await q.query(
    `WITH c AS (
       SELECT d.id, s.active, COALESCE(s.timeout_seconds * 1000, $2::int) + $3::int AS lease_ms
       FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
       WHERE d.id = ANY($1::uuid[]) AND d.status IN ('pending', 'retrying') AND d.next_attempt_at <= now() AND NOT s.paused
       ORDER BY d.id
       FOR UPDATE OF d SKIP LOCKED)
     UPDATE webhook_deliveries d SET
       status = CASE WHEN c.active THEN 'sending' ELSE 'dead' END,
       attempts = d.attempts + CASE WHEN c.active THEN 1 ELSE 0 END,
       locked_until = CASE WHEN c.active THEN now() + c.lease_ms ${MS} END,
       next_attempt_at = CASE WHEN c.active THEN d.next_attempt_at END,
       last_error = CASE WHEN c.active THEN d.last_error ELSE 'subscription disabled' END,
       manual = c.active AND d.manual,
       enqueued_at = NULL,
       updated_at = now()
     FROM c, webhook_subscriptions s
     WHERE d.id = c.id AND s.id = d.subscription_id
     RETURNING d.id, d.project_id, d.subscription_id, d.event_id, d.body, d.status, d.attempts, d.attempts_before_recover, d.manual,
       s.url, s.headers, s.secret, s.previous_secret, s.previous_secret_expires_at > now() AS previous_valid,
       s.max_attempts, s.timeout_seconds, s.rate_limit_per_second, s.endpoint_version::float8 AS endpoint_version`,
    [ids, opts.defaultTimeoutMs, opts.leaseMarginMs],
  );
  return r.rows.map((x) => ({
    id: x.id,
    projectId: x.project_id,
    subscriptionId: x.subscription_id,
    endpointVersion: Number(x.endpoint_version),
    eventId: x.event_id,
    body: x.body,
    status: x.status,
    attempts: x.attempts,
    attemptsBeforeRecover: x.attempts_before_recover,
    url: x.url,
    headers: x.headers ?? {},
    secrets: x.previous_secret && x.previous_valid ? [x.secret, x.previous_secret] : [x.secret],
    maxAttempts: x.max_attempts ?? null,
    timeoutSeconds: x.timeout_seconds ?? null,
    rateLimitPerSecond: x.rate_limit_per_second ?? null,
    manual: x.manual === true,
  }));
}

/**
 * Of these subscriptions, as `[id, endpoint version a claim saw]`, those whose endpoint changed
 * since (`gone: false`) or that are turned off or no longer exist (`gone: true`).
 */
export async function changedEndpoints(q: Queryable, seen: ReadonlyArray<readonly [string, number]>): Promise<Array<{ id: string; gone: boolean }>> {
  if (seen.length === 0) return [];
  const r = await q.query<{ id: string; gone: boolean }>(
    `SELECT p.id, (s.id IS NULL OR NOT s.active) AS gone
     FROM unnest($1::uuid[], $2::bigint[]) AS p(id, seen) LEFT JOIN webhook_subscriptions s ON s.id = p.id
     WHERE s.id IS NULL OR NOT s.active OR s.endpoint_version <> p.seen`,
    [seen.map(([id]) => id), seen.map(([, v]) => v)],
  );
  return r.rows;
}

/** Gives a claim back without spending its attempt (the circuit closed on it meanwhile). */
export async function unclaimDelivery(q: Queryable, id: string, attempt: number, retryAt: Date): Promise<void> {
  await q.query(
    `UPDATE webhook_deliveries SET status = CASE WHEN attempts = 1 THEN 'pending' ELSE 'retrying' END,
       attempts = attempts - 1, locked_until = NULL, next_attempt_at = $3::timestamptz, enqueued_at = NULL, updated_at = now()
     WHERE id = $1 AND status = 'sending' AND attempts = $2`,
    [id, attempt, retryAt.toISOString()],
  );
}

/** `circuit`: put off by the circuit, on a message that did not say the delivery is manual. */
export type Postponement = { id: string; until: Date; circuit?: boolean };

/**
 * Moves waiting deliveries to a later time without an attempt; the scheduler enqueues them then.
 * A manual one (migration 039) is not moved for the circuit, only handed back to the scheduler,
 * which sends it with its pass: the circuit put it off only because the message it came on — a
 * stale or duplicate one — did not say it was manual.
 */
export async function postponeDeliveries(q: Queryable, items: readonly Postponement[]): Promise<void> {
  if (items.length === 0) return;
  await q.query(
    `UPDATE webhook_deliveries d SET next_attempt_at = CASE WHEN p.circuit AND d.manual THEN d.next_attempt_at ELSE GREATEST(d.next_attempt_at, p.until) END,
       enqueued_at = NULL, updated_at = now()
     FROM unnest($1::uuid[], $2::timestamptz[], $3::boolean[]) AS p(id, until, circuit)
     WHERE d.id = p.id AND d.status IN ('pending', 'retrying')`,
    [items.map((i) => i.id), items.map((i) => i.until.toISOString()), items.map((i) => i.circuit === true)],
  );
}

export type AttemptOutcomeRow = {
  deliveryId: string;
  projectId: string;
  /** The attempt number the claim returned: the fencing token. */
  n: number;
  at: Date;
  statusCode: number | null;
  durationMs: number;
  errorClass: string;
  error: string | null;
  responseExcerpt: string | null;
  next: { status: 'succeeded' | 'dead' } | { status: 'retrying'; at: Date };
  /** The subscription's endpoint version the claim saw: a late success settles a delivery made
   * pending again only while the endpoint is still the one the attempt went to. */
  endpointVersion?: number;
};

/**
 * Records attempts and the states they lead to, in one statement. The delivery changes only if
 * it is still in the claim this attempt made (sending, same attempt number): a dispatcher that
 * outlived its lease cannot overwrite what happened since — except with a success when the
 * scheduler took the delivery back and no attempt started after it (retrying or dead, or pending
 * again after a manual retry or a recover while the endpoint is the one the attempt went to; same
 * attempt number): the receiver has the event, and a retry or a recover would send it twice.
 * The attempt itself is always kept — it replaces the `interrupted` placeholder the scheduler
 * may have written for it.
 */
export async function recordAttempts(q: Queryable, rows: readonly AttemptOutcomeRow[]): Promise<void> {
  if (rows.length === 0) return;
  await q.query(
    `WITH r AS (
       SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::int[], $4::timestamptz[], $5::int[], $6::int[], $7::text[], $8::text[], $9::text[], $10::text[], $11::timestamptz[], $12::bigint[])
         AS r(id, project_id, n, at, status_code, duration_ms, error_class, error, excerpt, next_status, next_at, endpoint_version)),
     upd AS (
       UPDATE webhook_deliveries d SET status = r.next_status, next_attempt_at = r.next_at, locked_until = NULL,
         enqueued_at = NULL, manual = false,
         last_status_code = r.status_code, last_error = r.error, updated_at = now()
       FROM r WHERE d.id = r.id AND d.attempts = r.n
         AND (d.status = 'sending'
           -- Taken back after its lease, and no attempt started since: the receiver has it.
           OR (r.next_status = 'succeeded' AND d.status IN ('retrying', 'dead'))
           -- Dead once taken back, then retried by hand or recovered: the same, unless the
           -- endpoint changed since (the person asked for the new one to get it).
           OR (r.next_status = 'succeeded' AND d.status = 'pending'
             AND EXISTS (SELECT 1 FROM webhook_subscriptions s WHERE s.id = d.subscription_id AND s.endpoint_version = r.endpoint_version)))
       RETURNING d.id)
     INSERT INTO webhook_attempts (delivery_id, n, project_id, at, status_code, duration_ms, error_class, error, response_excerpt)
     SELECT id, n, project_id, at, status_code, duration_ms, error_class, error, excerpt FROM r
     -- A delivery deleted meanwhile (its subscription was) has nothing left to record on.
     WHERE EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.id = r.id)
     ON CONFLICT (delivery_id, n) DO UPDATE SET at = EXCLUDED.at, status_code = EXCLUDED.status_code, duration_ms = EXCLUDED.duration_ms,
       error_class = EXCLUDED.error_class, error = EXCLUDED.error, response_excerpt = EXCLUDED.response_excerpt`,
    [
      rows.map((x) => x.deliveryId),
      rows.map((x) => x.projectId),
      rows.map((x) => x.n),
      rows.map((x) => x.at.toISOString()),
      rows.map((x) => x.statusCode),
      rows.map((x) => x.durationMs),
      rows.map((x) => x.errorClass),
      rows.map((x) => x.error),
      rows.map((x) => x.responseExcerpt),
      rows.map((x) => x.next.status),
      rows.map((x) => (x.next.status === 'retrying' ? x.next.at.toISOString() : null)),
      rows.map((x) => x.endpointVersion ?? null),
    ],
  );
}

export const INTERRUPTED_ERROR = 'the dispatcher stopped before recording the outcome (crash or lost lease); the receiver may or may not have received it';

/**
 * Sending rows whose lease expired: their dispatcher died mid-attempt (or cut the attempt off at
 * shutdown). The attempt is recorded as `interrupted` and counts; the delivery is due again right
 * away, or dead if that was its last — a manual retry's single attempt is (see `requeueDelivery`).
 */
export async function reclaimExpired(q: Queryable, opts: { limit: number; defaultMaxAttempts: number }): Promise<Array<{ id: string; subscriptionId: string; projectId: string; status: string }>> {
  const r = await q.query(
    `WITH lost AS (
       SELECT d.id, d.project_id, d.attempts, d.updated_at,
         CASE WHEN d.attempts <= d.attempts_before_recover THEN d.attempts
           ELSE d.attempts_before_recover + COALESCE(s.max_attempts, $2::int) END AS max_attempts
       FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
       WHERE d.status = 'sending' AND d.locked_until < now()
       ORDER BY d.locked_until LIMIT $1
       FOR UPDATE OF d SKIP LOCKED),
     att AS (
       INSERT INTO webhook_attempts (delivery_id, n, project_id, at, error_class, error)
       SELECT id, attempts, project_id, updated_at, 'interrupted', $3 FROM lost
       ON CONFLICT (delivery_id, n) DO NOTHING)
     UPDATE webhook_deliveries d SET
       status = CASE WHEN lost.attempts >= lost.max_attempts THEN 'dead' ELSE 'retrying' END,
       next_attempt_at = CASE WHEN lost.attempts >= lost.max_attempts THEN NULL ELSE now() END,
       locked_until = NULL, enqueued_at = NULL, manual = false, last_status_code = NULL, last_error = $3, updated_at = now()
     FROM lost WHERE d.id = lost.id
     RETURNING d.id, d.subscription_id, d.project_id, d.status`,
    [opts.limit, opts.defaultMaxAttempts, INTERRUPTED_ERROR],
  );
  return r.rows.map((x) => ({ id: x.id, subscriptionId: x.subscription_id, projectId: x.project_id, status: x.status }));
}

/** A delivery the scheduler put on the queue; `manual` when a person asked for it (migration 039). */
export type DueDelivery = { id: string; subscriptionId: string; projectId: string; manual: boolean };

/**
 * Due deliveries not on the queue, oldest due first; several schedulers share the work (SKIP
 * LOCKED). Those of unpaused subscriptions are marked enqueued and returned in `taken`, with the
 * id of the journal entry (`webhook_unconfirmed_enqueues`) that records the marks until
 * `confirmEnqueued` says their send went through. Those of paused subscriptions are returned,
 * untouched, in `paused`, for `holdDeliveries`.
 *
 * What a call costs: the statement walks `webhook_deliveries_takeable` (migration 030), which holds
 * only waiting rows that are neither on the queue nor held for a paused subscription, so it reads
 * what it returns — a delivery of a paused subscription at most once before it is held. (It used
 * to walk every waiting row and drop, on every pass, those on the queue and those a paused
 * subscription held: a burst of new deliveries, or a paused busy endpoint, made every pass of every
 * worker read all of them.) Marks whose message was lost are `releaseLost`'s, on an index of their own.
 */
export async function takeDue(q: Queryable, opts: { limit: number }): Promise<{ taken: DueDelivery[]; journal: string | undefined; paused: string[] }> {
  const r = await q.query(
    `WITH due AS (
       SELECT d.id, s.paused FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
       WHERE d.status IN ('pending', 'retrying') AND d.enqueued_at IS NULL AND NOT d.held AND d.next_attempt_at <= now()
       ORDER BY d.next_attempt_at LIMIT $1
       FOR UPDATE OF d SKIP LOCKED),
     taken AS (
       UPDATE webhook_deliveries d SET enqueued_at = now() FROM due WHERE d.id = due.id AND NOT due.paused
       RETURNING d.id, d.subscription_id, d.project_id, d.manual),
     journal AS (
       INSERT INTO webhook_unconfirmed_enqueues (mark, delivery_ids)
       SELECT now(), array_agg(id) FROM taken HAVING count(*) > 0
       RETURNING id)
     SELECT t.id, t.subscription_id, t.project_id, t.manual, (SELECT id::text FROM journal) AS journal, false AS paused FROM taken t
     UNION ALL
     SELECT id, NULL, NULL, NULL, NULL, true FROM due WHERE paused`,
    [opts.limit],
  );
  const taken = r.rows.filter((x) => !x.paused);
  return {
    taken: taken.map((x) => ({ id: x.id, subscriptionId: x.subscription_id, projectId: x.project_id, manual: x.manual === true })),
    journal: taken[0]?.journal ?? undefined,
    paused: r.rows.filter((x) => x.paused).map((x) => x.id),
  };
}

/**
 * The send of `takeDue`'s marks went through (durable on the broker): their journal entry goes.
 * The deliveries themselves are not written — that would lock them just when the dispatcher claims
 * them, and a claim skips a locked row (its message would be spent for nothing).
 */
export async function confirmEnqueued(q: Queryable, journal: string): Promise<void> {
  await q.query('DELETE FROM webhook_unconfirmed_enqueues WHERE id = $1::bigint', [journal]);
}

/**
 * Holds due deliveries of paused subscriptions (`takeDue`'s `paused`): they leave the scheduler's
 * index until the subscription is resumed, whose `clearEnqueued` lets them go again. The
 * subscription is share-locked and read as it is now: a resume committed since `takeDue` read it
 * is seen (nothing is held), and one in progress is skipped (SKIP LOCKED: those deliveries are
 * left for the next pass). Without the lock a hold could land just after the resume's
 * `clearEnqueued` and keep the delivery for good. Returns how many were held.
 */
export async function holdDeliveries(q: Queryable, ids: readonly string[]): Promise<number> {
  if (ids.length === 0) return 0;
  const r = await q.query(
    `UPDATE webhook_deliveries SET held = true, enqueued_at = NULL, manual = false
     WHERE status IN ('pending', 'retrying') AND id = ANY(ARRAY(
       SELECT d.id FROM webhook_deliveries d JOIN webhook_subscriptions s ON s.id = d.subscription_id
       WHERE d.id = ANY($1::uuid[]) AND s.paused AND d.status IN ('pending', 'retrying') AND NOT d.held
       FOR UPDATE OF d SKIP LOCKED FOR SHARE OF s SKIP LOCKED))`,
    [ids],
  );
  return r.rowCount;
}

/**
 * Marks of a scheduler that stopped between marking and sending: journal entries (`takeDue`) older
 * than `graceMs` and never confirmed — up to `limit` of them — are deleted, and their deliveries
 * still so marked handed back to the scheduler (`enqueued_at` cleared: the next `takeDue` enqueues,
 * or holds, them). The journal holds a few rows at any time, so this is cheap whatever the queues
 * hold. A delivery claimed or marked again meanwhile is left alone (the mark is compared under the
 * row's lock).
 */
export async function releaseUnsent(q: Queryable, opts: { graceMs: number; limit: number }): Promise<{ entries: number; released: number }> {
  const r = await q.query(
    `WITH stale AS (
       DELETE FROM webhook_unconfirmed_enqueues WHERE id IN (
         SELECT id FROM webhook_unconfirmed_enqueues WHERE mark < now() - $1::float8 ${MS} ORDER BY mark LIMIT $2 FOR UPDATE SKIP LOCKED)
       RETURNING mark, delivery_ids),
     released AS (
       UPDATE webhook_deliveries d SET enqueued_at = NULL
       FROM stale, unnest(stale.delivery_ids) AS x(id)
       WHERE d.id = x.id AND d.enqueued_at = stale.mark AND d.status IN ('pending', 'retrying')
       RETURNING d.id)
     SELECT (SELECT count(*) FROM stale)::int AS entries, (SELECT count(*) FROM released)::int AS released`,
    [opts.graceMs, opts.limit],
  );
  return { entries: r.rows[0].entries, released: r.rows[0].released };
}

/**
 * Hands back to the scheduler up to `limit` deliveries marked enqueued before `before` (the caller
 * saw the webhook queues empty then, a grace ago) or more than `olderThanMs` ago (the caller's
 * backstop, for queues never seen empty): their message was purged, dead-lettered, consumed while
 * their subscription was paused, or never sent (a crash right after the commit of the fan-out, a
 * retry or recover, which mark in their transaction and send after it). Walks
 * `webhook_deliveries_enqueued` from the oldest mark and stops at the cutoff, so a backlog still
 * on the queue costs nothing here. Returns how many.
 */
export async function releaseGone(q: Queryable, opts: { before?: Date; olderThanMs: number; limit: number }): Promise<number> {
  const cutoff = `GREATEST(now() - $1::float8 ${MS}, $2::timestamptz)`;
  const r = await q.query(
    `UPDATE webhook_deliveries SET enqueued_at = NULL
     WHERE status IN ('pending', 'retrying') AND enqueued_at < ${cutoff} AND id = ANY(ARRAY(
       SELECT id FROM webhook_deliveries WHERE status IN ('pending', 'retrying') AND enqueued_at IS NOT NULL AND enqueued_at < ${cutoff}
       ORDER BY enqueued_at LIMIT $3))`,
    [opts.olderThanMs, opts.before?.toISOString() ?? null, opts.limit],
  );
  return r.rowCount;
}

/**
 * The database's clock, and the oldest mark of a delivery still marked enqueued (null if none):
 * one index probe, so the scheduler looks at the queues only when a message may be lost.
 */
export async function oldestEnqueued(q: Queryable): Promise<{ now: Date; oldest: Date | null }> {
  const r = await q.query(
    `SELECT now() AS now, (SELECT enqueued_at FROM webhook_deliveries
       WHERE status IN ('pending', 'retrying') AND enqueued_at IS NOT NULL
       ORDER BY enqueued_at LIMIT 1) AS oldest`,
  );
  const row = r.rows[0];
  return { now: new Date(row.now), oldest: row.oldest ? new Date(row.oldest) : null };
}
