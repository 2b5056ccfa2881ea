// The dispatcher: consumes delivery ids from `webhooks.outbound` and `webhooks.due` and makes one
// attempt each.
//
//   message ─▶ admit (circuit, in-flight cap, rate) ──refused──▶ postpone (no attempt spent)
//                │ ok
//                ▼
//            claim (pending|retrying & due → sending, attempts+1, lease) ──nothing──▶ ack (duplicate)
//                ▼
//            a request slot (WEBHOOK_CONCURRENCY) ─▶ ack; then, past the message:
//            sign + POST + classify ─▶ record attempt + next state (one statement)
//                                       succeeded | retrying at next_attempt_at | dead
//
// Claims, records and postponements of concurrent messages are batched into one statement each,
// so the database sees a few round trips per batch rather than per delivery. Once a delivery is
// claimed and has its request slot, the row and its lease are the truth: if the process dies
// mid-attempt (or cannot record the outcome) the row stays `sending` until its lease passes, then
// the scheduler records the attempt as interrupted and retries it.
import { errorText, PROJECT_HEADER, type Broker, type Delivery, type Handler } from '../broker/broker.ts';
import type { Config } from '../config.ts';
import type { Database } from '../db/database.ts';
import { msUntil, withDeadline } from '../deadline.ts';
import { withTransaction } from '../db/transaction.ts';
import {
  changedEndpoints, claimDeliveries, postponeDeliveries, recordAttempts, unclaimDelivery,
  type AttemptOutcomeRow, type ClaimedDelivery, type Postponement,
} from '../db/webhook-dispatch.sql.ts';
import { bringDeliveriesForward, disableSubscription, ENDPOINT_CHANGES, ENDPOINT_GONE } from '../db/webhook-subscriptions.sql.ts';
import { keepListening } from '../db/keep-listening.ts';
import { newEvent } from '../domain/events.ts';
import { isUuid } from '../domain/ids.ts';
import { makeBatcher } from '../inbound/batcher.ts';
import type { Logger } from '../observability/logger.ts';
import { webhookAttemptDuration, webhookCircuitOpen, webhookDeliveriesTotal } from '../observability/metrics.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';
import { makeCircuitBreaker, type CircuitBreakerOptions } from './circuit-breaker.ts';
import { bothSlots, endpointCaps, makeEndpointLimits, projectCaps, type EndpointLimits, type EndpointSlot } from './endpoint-limits.ts';
import { makeSlots, type Slot } from './request-slots.ts';
import { makeHealthRecorder } from './health-recorder.ts';
import { MANUAL_HEADER, SUBSCRIPTION_HEADER } from './outbound-queue.ts';
import { closeAgent, decideNext, sendAttempt, type AttemptReport } from './send-attempt.ts';
import { makeGuardedDispatcher, type ResolveHost } from './ssrf-guard.ts';

export type DispatcherOptions = {
  db: Database;
  broker: Broker;
  config: Pick<Config, 'webhookConcurrency' | 'webhookRetryScheduleMs' | 'webhookTimeoutMs' | 'webhookAllowPrivateUrls' | 'shutdownTimeoutMs'>;
  secretKey: string;
  logger: Logger;
  /** DNS for the delivery-time SSRF check (tests inject one). */
  resolve?: ResolveHost;
  /** Lease = the subscription's timeout + this; past it a `sending` row is presumed abandoned. */
  leaseMarginMs?: number;
  circuit?: Omit<CircuitBreakerOptions, 'onChange'>;
  /** Told when a postponed or retried delivery comes due, so a scheduler can wake for it. */
  onDue?: (atMs: number) => void;
  random?: () => number;
  /**
   * At shutdown, how long attempts under way may go on before they are cut off; by default
   * SHUTDOWN_TIMEOUT_MS, what a consumer gives its handlers (or until the shutdown's deadline).
   */
  stopAttemptsMs?: number;
};

export type WebhookDispatcher = {
  handle: Handler;
  /**
   * After the consumer stopped: waits for the attempts under way (until `deadline`, epoch ms, when
   * given), cuts off the rest, writes pending health counts, closes connections.
   */
  stop(deadline?: number): Promise<void>;
};

/**
 * At the per-endpoint cap: an endpoint whose oldest attempt in flight is younger than
 * SLOW_ENDPOINT_MS is busy, not stuck — a delivery waits in memory for a slot until that attempt
 * reaches SLOW_ENDPOINT_MS, and if the line is full it comes back after BUSY_BACKOFF_MS. A stuck
 * endpoint's deliveries are postponed by the age of that oldest attempt (at most
 * MAX_STUCK_BACKOFF_MS): roughly when a slot may be free again, so its backlog does not churn
 * through the queue.
 */
const SLOW_ENDPOINT_MS = 1_000;
const BUSY_BACKOFF_MS = 250;
const MAX_STUCK_BACKOFF_MS = 30_000;
/** While a half-open circuit's probe is out, other deliveries of that endpoint wait this long. */
const PROBE_WAIT_MS = 5_000;
/** A half-open probe is lost once its attempt's own timeout and this much more have passed. */
const PROBE_LOST_MARGIN_MS = 5_000;
/** A rate slot this close is waited for in place; a later one is a postponement. */
const RATE_WAIT_INLINE_MS = 50;
const MAX_AGENT_TIMEOUT_MS = 300_000;
/** At shutdown, how long attempts just cut off (their connections destroyed) get to wind up. */
const CUT_OFF_WIND_UP_MS = 5_000;

/**
 * Through admission: the endpoint's in-flight slot, the project's (when the message named its
 * project), and the send time when the rate limit was applied.
 */
type Admitted = { inflight: EndpointSlot; project?: ProjectSlot; sendAt?: number };
type ProjectSlot = { projectId: string; slot: EndpointSlot };

export function makeDispatcher(opts: DispatcherOptions): WebhookDispatcher {
  const { db, config } = opts;
  const log = opts.logger.child({ component: 'webhook-dispatcher' });
  const random = opts.random ?? Math.random;
  const leaseMarginMs = opts.leaseMarginMs ?? 30_000;
  const agent = makeGuardedDispatcher({
    allowPrivate: config.webhookAllowPrivateUrls,
    timeoutMs: MAX_AGENT_TIMEOUT_MS, // postWebhook enforces each subscription's own deadline
    ...(opts.resolve && { resolve: opts.resolve }),
  });
  const breaker = makeCircuitBreaker({
    ...opts.circuit,
    onChange: (key, state) => {
      if (state === 'closed') webhookCircuitOpen.remove({ subscription: key });
      else webhookCircuitOpen.set({ subscription: key }, 1);
      log.info({ subscription_id: key, circuit: state }, 'webhook circuit changed');
    },
  });
  /**
   * Per subscription, its endpoint's generation: the count of all endpoint changes this process
   * had heard of when it heard the latest of this one (so a generation only grows, and a claim
   * can tell a change of its subscription heard while it ran).
   */
  const endpointGenerations = new Map<string, number>();
  let endpointChangesHeard = 0;
  // Another URL, or turned back on by hand (any process's API): what this breaker learnt of the
  // endpoint is forgotten, and then the deliveries it held back are due again. The API made them
  // due too, but this process may have postponed some since, before it heard: each process undoes
  // its own. Without notifications a circuit keeps its state to the end of its cool-down.
  // Turned off or deleted (migration 038): nothing is sent to it any more, so what was learnt
  // goes, its circuit and `webhook_circuit_open` series with it (else 1 until a restart).
  const onEndpointChange = (payload: string) => {
    const gone = payload.startsWith(ENDPOINT_GONE);
    const id = gone ? payload.slice(ENDPOINT_GONE.length) : payload;
    if (!isUuid(id)) return;
    forget(id);
    if (!gone) void bringForward(id);
  };
  /** What this process learnt of an endpoint, forgotten: learning starts again from its next claim. */
  const forget = (id: string) => {
    endpointSeen.delete(id);
    rates.delete(id);
    // Attempts still out to the old endpoint now belong to an earlier generation: they hold no
    // slot of the new one, and what they end with is not the new one's (see `attempt`) — nor,
    // once it is gone, do their failures open its circuit again (nothing would close it).
    endpointGenerations.set(id, ++endpointChangesHeard);
    limits.detach(id);
    breaker.reset(id);
  };
  const generationOf = (sub: string) => endpointGenerations.get(sub) ?? 0;
  const bringForward = (sub: string) =>
    bringDeliveriesForward(db, sub).then(
      (n) => void (n > 0 && opts.onDue?.(Date.now())),
      (err: unknown) => log.warn({ err, subscription_id: sub }, 'could not bring deliveries forward after an endpoint change'),
    );
  /**
   * Per subscription, its endpoint version (migration 031) when this process began to learn of the
   * endpoint: its first claim since it last heard of a change. Changes announced while LISTEN was
   * down were missed; once it listens again, the endpoints changed since are taken as changed.
   * (An entry stays until its endpoint changes or, found at a catch-up, its subscription is gone.)
   */
  const endpointSeen = new Map<string, number>();
  const catchUpOnChanges = () =>
    changedEndpoints(db, [...endpointSeen])
      .then((changed) => {
        for (const { id, gone } of changed) {
          if (gone) forget(id);
          else onEndpointChange(id);
        }
        const n = changed.filter((c) => !c.gone).length;
        if (n > 0) log.info({ subscriptions: n }, 'webhook endpoints changed while their changes could not be heard; their circuits start afresh');
      })
      .catch((err: unknown) => log.warn({ err }, 'could not look for webhook subscriptions changed while endpoint changes could not be heard'));
  const endpointChanges = keepListening(db, ENDPOINT_CHANGES, onEndpointChange, {
    logger: log,
    what: 'webhook endpoint changes',
    fallback: 'an open circuit waits out its cool-down after its subscription changes',
    onResume: () => void catchUpOnChanges(),
  });
  const limits = makeEndpointLimits(endpointCaps(config.webhookConcurrency));
  // The same caps per project, over all its endpoints: a project whose several endpoints all hang
  // holds at most half of the request slots, not every one (each endpoint alone a quarter).
  const projects = makeEndpointLimits(projectCaps(config.webhookConcurrency));
  // WEBHOOK_CONCURRENCY bounds the requests in flight. The consumers hand us more deliveries than
  // that (webhook-worker.ts), so one already admitted to its endpoint is waiting whenever a request
  // slot frees, and waiting for an endpoint never holds a request slot. An attempt's outcome is
  // recorded after both its slots are free; an endpoint that hangs holds only request slots.
  const requests = makeSlots(config.webhookConcurrency);
  /** Attempts under way, each past its queue message (see handle). */
  const attempts = new Set<Promise<void>>();
  const health = makeHealthRecorder({ db, logger: log });
  // Last known rate limit per subscription, learned from claims, so the admission check can
  // apply it before claiming (a claim spends an attempt number).
  const rates = new Map<string, number | null>();
  const batch = { maxBatch: 200, maxInflight: db.kind === 'pglite' ? 1 : 4 };
  /** Set at shutdown just before the connections of attempts still out are destroyed. */
  let cutOff = false;
  /** Set when stop() begins: a handler that gets a request slot after that starts nothing. */
  let stopping = false;

  const claims = makeBatcher<string, ClaimedDelivery | undefined>(async (_key, ids) => {
    // A row read before a change of its subscription was heard is not recorded as what was learnt.
    const heardBefore = endpointChangesHeard;
    const rows = await claimDeliveries(db, [...new Set(ids)], { defaultTimeoutMs: config.webhookTimeoutMs, leaseMarginMs });
    for (const r of rows) {
      if (!endpointSeen.has(r.subscriptionId) && generationOf(r.subscriptionId) <= heardBefore) endpointSeen.set(r.subscriptionId, r.endpointVersion);
    }
    const byId = new Map(rows.map((r) => [r.id, r]));
    // The same id twice in one batch (a duplicate message) gets the claim once.
    return ids.map((id) => {
      const row = byId.get(id);
      byId.delete(id);
      return row;
    });
  }, batch);
  // A batch that fails is recorded row by row, so one bad row costs only itself.
  const records = makeBatcher<AttemptOutcomeRow, unknown>(async (_key, rows) => {
    try {
      await recordAttempts(db, rows);
      return rows.map(() => undefined);
    } catch (err) {
      if (rows.length === 1) return [err];
      return Promise.all(rows.map((row) => recordAttempts(db, [row]).then(() => undefined, (e: unknown) => e)));
    }
  }, batch);
  const postponements = makeBatcher<Postponement, void>(async (_key, items) => {
    await postponeDeliveries(db, items);
    return items.map(() => undefined);
  }, batch);

  /**
   * Postpones a delivery on what this process knew of its endpoint at generation `seen`. `circuit`:
   * put off by the circuit, on a message that did not say the delivery was asked for by a person —
   * a row that says so is not put off (postponeDeliveries), and the scheduler sends it again, its
   * pass on the message.
   */
  async function postpone(id: string, sub: string, untilMs: number, seen: number, circuit = false): Promise<void> {
    await postponements.submit('p', { id, until: new Date(untilMs), circuit });
    return dueAt(sub, untilMs, seen);
  }

  /**
   * After a delivery's later time was written on what this process knew of its endpoint at
   * generation `seen`: the scheduler is told when it is due — or, should the endpoint have changed
   * meanwhile, the change's bring-forward may have run before the write landed, and it runs again.
   */
  function dueAt(sub: string, atMs: number, seen: number): Promise<void> | void {
    if (generationOf(sub) !== seen) return bringForward(sub);
    opts.onDue?.(atMs);
  }

  /** The circuit's word on an endpoint: undefined (go) or when to offer its deliveries again. */
  function circuitWait(subscriptionId: string, now: number): number | undefined {
    const circuit = breaker.state(subscriptionId);
    if (circuit.state === 'open' && circuit.openUntil !== undefined && circuit.openUntil > now) return circuit.openUntil;
    // A probe is out: wait for its word, but not past the time it counts as lost — then the
    // attempt's own canAttempt lets another probe go.
    if (circuit.state === 'half_open' && circuit.probeExpiresAt !== undefined && circuit.probeExpiresAt > now) return Math.min(now + PROBE_WAIT_MS, circuit.probeExpiresAt);
    return undefined;
  }

  /**
   * Admission before the claim, for a message that names its subscription: the circuit, the
   * in-flight cap, then the rate limit (if we know it). Returns the in-flight slot and the
   * reserved send time, or undefined after postponing the delivery.
   */
  async function admit(id: string, sub: string, projectId: string | undefined, manual: boolean): Promise<Admitted | undefined> {
    const now = Date.now();
    const seen = generationOf(sub);
    const wait = manual ? undefined : circuitWait(sub, now);
    if (wait !== undefined) return void (await postpone(id, sub, wait, seen, true));
    const inflight = await slotUnder(limits, sub, id, sub, seen);
    if (!inflight) return;
    let project: ProjectSlot | undefined;
    if (projectId) {
      let slot: EndpointSlot | undefined;
      try {
        slot = await slotUnder(projects, projectId, id, sub, seen);
      } finally {
        // Not admitted (postponed, or the postponement failed): the endpoint's slot goes back.
        if (!slot) inflight.release();
      }
      if (!slot) return;
      project = { projectId, slot };
    }
    // Unknown until a claim of this subscription told us; then the claim below applies it.
    const rate = rates.get(sub);
    if (rate === undefined) return { inflight, ...(project && { project }) };
    const sendAt = limits.rateSlot(sub, id, rate, Date.now(), RATE_WAIT_INLINE_MS);
    if (sendAt - Date.now() > RATE_WAIT_INLINE_MS) {
      inflight.release();
      project?.slot.release();
      return void (await postpone(id, sub, sendAt, seen));
    }
    return { inflight, ...(project && { project }), sendAt };
  }

  /**
   * A slot under `caps` (an endpoint's or a project's) for delivery `id` of subscription `sub`,
   * or undefined after postponing it. At the cap: whoever holds the slots frees one in moments
   * while its oldest attempt is young — wait for it here, at most until that attempt would make
   * it slow. Once its oldest attempt has been running a while it is slow or stuck: offer this
   * delivery again later, the longer the older that attempt, so a hanging backlog does not churn.
   */
  async function slotUnder(caps: EndpointLimits, key: string, id: string, sub: string, seen: number): Promise<EndpointSlot | undefined> {
    let slot = caps.tryAcquire(key);
    if (slot) return slot;
    const ageNow = caps.oldestAge(key, Date.now());
    if (ageNow < SLOW_ENDPOINT_MS) slot = await caps.waitFor(key, SLOW_ENDPOINT_MS - ageNow);
    if (slot) return slot;
    const age = caps.oldestAge(key, Date.now());
    const backoff = age < SLOW_ENDPOINT_MS ? BUSY_BACKOFF_MS : Math.min(age, MAX_STUCK_BACKOFF_MS);
    await postpone(id, sub, Date.now() + backoff * (0.8 + 0.4 * random()), seen);
    return undefined;
  }

  async function handle(msg: Delivery): Promise<void> {
    const id = msg.messageId;
    // Only our own code enqueues here, but a replayed dead letter could carry anything, and one
    // bad id must not fail the claim batch it would share with others.
    if (!isUuid(id)) return void log.error({ message_id: id }, 'webhook delivery message without a delivery id dropped');
    const hinted = msg.headers[SUBSCRIPTION_HEADER];
    // Asked for by a person (MANUAL_HEADER): past the circuit, within every other limit. Until the
    // claim, the message says so; from the claim on, the row says so too (it keeps the pass when a
    // cap or the rate limit puts the delivery off, and drops it once the attempt is recorded).
    let manual = msg.headers[MANUAL_HEADER] === '1';
    let admitted: Admitted | undefined;
    if (hinted) {
      admitted = await admit(id, hinted, msg.headers[PROJECT_HEADER], manual);
      if (!admitted) return;
    }
    // A request slot before the claim: a claimed row (its lease running) never waits for one.
    const request = await requests.acquire();
    // Both slots go back below unless an attempt takes them over.
    let inflight = admitted?.inflight;
    let project = admitted?.project;
    let detached = false;
    try {
      // Woken by the cut-off at shutdown: no attempt starts behind stop(). The row is untouched;
      // its message comes back (RabbitMQ: the consumer's channel is gone), or the scheduler sends
      // the row again as a lost message (the Postgres-backed queue takes this return as done).
      if (stopping) return;
      const claim = await claims.submit('c', id);
      if (!claim) return;
      if (claim.status === 'dead') return void webhookDeliveriesTotal.inc({ result: 'dead' });
      // Either: a message without the header may claim a row that has the pass (a stale or
      // duplicate one), and a row written by a version before migration 039 has none.
      manual ||= claim.manual;
      const sub = claim.subscriptionId;
      if (hinted !== sub || !inflight) {
        // No (right) hint: that endpoint's slot goes back, and this one's is counted, never
        // refused — the claim is made.
        inflight?.release();
        inflight = limits.force(sub);
      }
      if (project?.projectId !== claim.projectId) {
        project?.slot.release();
        project = { projectId: claim.projectId, slot: projects.force(claim.projectId) };
      }
      let sendAt = hinted === sub ? admitted?.sendAt : undefined;
      rates.set(sub, claim.rateLimitPerSecond);
      let now = Date.now();
      const seen = generationOf(sub);
      sendAt ??= limits.rateSlot(sub, claim.id, claim.rateLimitPerSecond, now, RATE_WAIT_INLINE_MS);
      let wait = (manual ? undefined : circuitWait(sub, now)) ?? (sendAt - now > RATE_WAIT_INLINE_MS ? sendAt : undefined);
      if (wait === undefined && !manual && !breaker.canAttempt(sub, now, (claim.timeoutSeconds ? claim.timeoutSeconds * 1000 : config.webhookTimeoutMs) + PROBE_LOST_MARGIN_MS)) wait = breaker.state(sub).openUntil ?? now + PROBE_WAIT_MS;
      if (wait !== undefined) {
        // Not now after all (the circuit opened meanwhile, or a rate we just learned): give the
        // attempt number back.
        await unclaimDelivery(db, claim.id, claim.attempts, new Date(wait));
        return dueAt(sub, wait, seen);
      }
      now = Date.now();
      if (sendAt > now) await new Promise((r) => setTimeout(r, sendAt - now));
      // From here the claimed row, with its lease, is the truth and the queue message is done: the
      // consumer's worker goes back to other deliveries while the request runs, so an endpoint that
      // hangs holds request slots (its quarter) and nothing else. If the process dies meanwhile,
      // the lease runs out and the scheduler takes the delivery back — as it would anyway, since a
      // redelivered message finds the row still `sending`.
      detached = true;
      const p: Promise<void> = attempt(claim, request, bothSlots(inflight, project.slot), manual)
        .catch((err: unknown) => void log.error({ delivery_id: claim.id, err: errorText(err) }, 'webhook attempt not recorded; the delivery is retried once its lease runs out'))
        .finally(() => attempts.delete(p));
      attempts.add(p);
    } finally {
      if (!detached) {
        request.release();
        inflight?.release();
        project?.slot.release();
      }
    }
  }

  async function attempt(claim: ClaimedDelivery, request: Slot, inflight: EndpointSlot, manual: boolean): Promise<void> {
    let report: AttemptReport;
    const generation = generationOf(claim.subscriptionId);
    inflight.start(Date.now()); // the endpoint's clock starts with its request
    try {
      report = await sendAttempt(claim, {
        secretKey: opts.secretKey,
        scheduleMs: config.webhookRetryScheduleMs,
        defaultTimeoutMs: config.webhookTimeoutMs,
        agent,
        random,
      });
      if (cutOff && report.result.statusCode === undefined) {
        // We cut it off ourselves (stop): that says nothing of the endpoint, and it is no attempt
        // of the delivery — no backoff, no attempt spent (on its last, it would be `dead`). The
        // claim is given back, due now; should that fail, its lease brings it back (as interrupted).
        await unclaimDelivery(db, claim.id, claim.attempts, new Date()).then(
          () => log.info({ delivery_id: claim.id, attempt: claim.attempts }, 'webhook attempt cut off at shutdown; the delivery is due again'),
          (err: unknown) => log.warn({ err, delivery_id: claim.id }, 'webhook attempt cut off at shutdown; its lease brings the delivery back'),
        );
        return;
      }
      if (generationOf(claim.subscriptionId) !== generation) {
        // The endpoint changed while this attempt was out: it spoke for the old one.
        report = fromOldEndpoint(claim, report);
      } else {
        // The circuit hears of the answer before the endpoint's slot is free again, so the next
        // delivery admitted to it is judged with this failure counted (recording it is ours to do).
        judge(claim.subscriptionId, report, manual);
      }
    } finally {
      // The cap is on requests the endpoint has in flight: recording the outcome is our
      // database's work, and holding the slot through it would cap a fast endpoint at
      // slots ÷ (request + recording time).
      request.release();
      inflight.release();
    }
    await settle(claim, report);
  }

  /**
   * An attempt that went to the endpoint the subscription had before a change: it is recorded as
   * it went (its attempt is spent), but it says nothing of the new endpoint. A failure does not
   * count on the new one's circuit or failing streak, does not disable the subscription (a 410
   * from the URL just replaced), and the delivery is due again at once, at the new URL, while it
   * has attempts left.
   */
  function fromOldEndpoint(claim: ClaimedDelivery, report: AttemptReport): AttemptReport & { stale: true } {
    if (report.outcome.class === 'success') return { ...report, stale: true };
    const outcome = { ...report.outcome, disable: false, retry: true, retryAfterMs: undefined };
    const next = decideNext(claim, outcome, { scheduleMs: config.webhookRetryScheduleMs, random });
    return { ...report, outcome, next: next.status === 'retrying' ? { status: 'retrying', at: new Date() } : next, stale: true };
  }

  /**
   * The endpoint's circuit, told how an attempt ended. `manual`: an attempt a person asked for,
   * sent past the circuit. Its failure says nothing the circuit did not know (it is open, or a
   * probe is out whose answer it must not take): it counts only while the circuit is closed.
   */
  function judge(sub: string, { outcome, startedAt }: AttemptReport, manual: boolean): void {
    const now = Date.now();
    if (outcome.class === 'success') {
      const was = breaker.state(sub).state;
      breaker.recordSuccess(sub, now);
      // A manual attempt went past the open circuit and found the endpoint back: the deliveries the
      // circuit held back are due now, not at the end of its cool-down.
      if (was === 'open') void bringForward(sub);
    }
    // A 429: up, and told us when to come back (the delivery waits for its Retry-After).
    else if (outcome.class === 'rate_limited') breaker.recordAnswer(sub, now);
    // After a 410 the subscription is disabled and its circuit forgotten (recordGone).
    else if (!outcome.disable && (!manual || breaker.state(sub).state === 'closed')) breaker.recordFailure(sub, now, startedAt.getTime());
  }

  async function settle(claim: ClaimedDelivery, report: AttemptReport): Promise<void> {
    const { result, outcome, next, startedAt } = report;
    const sub = claim.subscriptionId;
    const row: AttemptOutcomeRow = {
      deliveryId: claim.id,
      projectId: claim.projectId,
      n: claim.attempts,
      at: startedAt,
      statusCode: result.statusCode ?? null,
      durationMs: result.durationMs,
      errorClass: outcome.class,
      error: outcome.class === 'success' ? null : outcome.detail,
      responseExcerpt: result.responseExcerpt || null,
      next,
      endpointVersion: claim.endpointVersion,
    };
    if (outcome.disable) await recordGone(claim, row, outcome.detail);
    else {
      const failed = await records.submit('r', row);
      if (failed) throw failed;
    }
    webhookAttemptDuration.observe(result.durationMs / 1000);
    const done = new Date();
    if ('stale' in report) {
      // The old endpoint's word: not the new one's health.
    } else if (outcome.class === 'success') health.success(sub, done, result.statusCode ?? 200);
    else if (outcome.class === 'rate_limited') {
      // An endpoint that asks us to slow down is up: its 429s (in the attempt log) do not start or
      // extend a failing streak, which would disable a subscription that only throttles us.
    } else health.failure(sub, done, result.statusCode ?? null, outcome.detail);
    if (next.status === 'retrying') opts.onDue?.(next.at.getTime());
    webhookDeliveriesTotal.inc({ result: outcome.disable ? 'disabled' : next.status });
  }

  /**
   * 410 Gone: the attempt, the subscription's disabling (which ends its waiting deliveries) and
   * the webhook.endpoint_disabled event commit together, so nobody sees one without the others.
   */
  async function recordGone(claim: ClaimedDelivery, row: AttemptOutcomeRow, detail: string): Promise<void> {
    await withTransaction(
      db,
      async (tx) => {
        await recordAttempts(tx, [row]);
        const d = await disableSubscription(tx, claim.subscriptionId, 'the endpoint answered 410 Gone', { statusCode: row.statusCode, error: detail });
        if (!d) return; // already disabled by another attempt
        await appendEvents(tx, [
          newEvent('webhook.endpoint_disabled', {
            projectId: d.projectId,
            aggregateId: d.id,
            data: { subscription_id: d.id, url: d.url, reason: 'gone', last_status_code: row.statusCode, last_error: detail, failing_since: null },
          }),
        ]);
        log.warn({ subscription_id: d.id, url: d.url }, 'webhook subscription disabled: 410 Gone');
      },
      { projectId: row.projectId },
    );
    breaker.reset(claim.subscriptionId);
  }

  return {
    handle,
    async stop(deadline?: number) {
      stopping = true;
      // The consumers have stopped: let the attempts under way end and be recorded — until the
      // shutdown's deadline, or for as long as a consumer gives its handlers (SHUTDOWN_TIMEOUT_MS)
      // when stopped on its own. An attempt still running then is cut off with the connections
      // below and not recorded (see `attempt`): it is given back, due again at once.
      const waitMs = Math.min(opts.stopAttemptsMs ?? Infinity, msUntil(deadline) ?? config.shutdownTimeoutMs);
      await withDeadline(Promise.allSettled([...attempts]), waitMs, 'attempts still running').catch(
        () => void log.warn({ attempts: attempts.size }, 'webhook attempts cut off at shutdown; their leases bring them back'),
      );
      await endpointChanges.stop();
      await closeAgent(agent, { inFlight: attempts.size > 0, onCutOff: () => (cutOff = true) });
      // Those cut off end at once (and are not recorded), one that had its answer is being
      // recorded: wait for them, so that nothing of this dispatcher writes once stop() returned.
      await withDeadline(Promise.allSettled([...attempts]), CUT_OFF_WIND_UP_MS, 'attempts still winding up').catch(
        () => void log.warn({ attempts: attempts.size }, 'webhook attempts still winding up after shutdown'),
      );
      await health.stop();
    },
  };
}
