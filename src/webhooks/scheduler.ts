// The webhook scheduler: the loop that makes Postgres-held delays happen. Each pass
//   1. takes `sending` rows whose lease expired (their dispatcher died): the attempt is recorded
//      as interrupted and the delivery is due again (or dead, if that was its last attempt);
//   2. hands back rows marked enqueued whose message is lost (see "Lost messages" below);
//   3. enqueues due `pending`/`retrying` rows of unpaused subscriptions onto webhooks.due, and
//      holds those of paused ones (out of its index until the resume);
//   4. now and then, disables subscriptions failing for WEBHOOK_DISABLE_AFTER_DAYS.
// It runs every `pollMs`, and sooner when the dispatcher says a retry comes due earlier. Several
// schedulers (one per worker process) share the work through SKIP LOCKED; none is special.
// Each statement of a pass reads what it takes (plus an index probe), not the backlog: waiting
// rows on the queue or held for a paused subscription are in none of the indexes it walks
// (migration 030).
//
// Lost messages. A row is marked enqueued (`enqueued_at`) when a message for it is sent, so that
// no pass sends it again while it is on the queue; its claim clears the mark. Every path marks
// before it sends: the scheduler (takeDue, then a send to webhooks.due), the fan-out and the API's
// test event (in the insert's transaction, sending after commit), a manual retry and recover (in
// their transaction, sending after commit); a resume and a failed send clear marks instead. A mark
// without a message comes from
//   - a process that stopped between marking and sending (or whose send failed and whose
//     clearEnqueued failed too);
//   - a message gone from the queue: purged by an operator, dead-lettered after its handler failed
//     for good, lost by a broker that had confirmed it;
//   - a message consumed while its subscription was paused (the claim leaves the row alone).
// It used to be "still marked a minute later": a backlog longer than a minute (a slow period) was
// put on webhooks.due again every minute while it lasted, each copy costing an admission, a claim
// query and a slot. Now:
//   - the scheduler's own marks are journalled (webhook_unconfirmed_enqueues) until the broker has
//     confirmed their send; an entry still there after `enqueueGraceMs` is a scheduler that stopped
//     in between, and its deliveries come back (`releaseUnsent`) — as fast as before;
//   - any other mark is taken as lost only once both webhook queues were seen empty (nothing ready,
//     in flight or waiting for a retry) after it was made, and another grace has passed, for a
//     message a consumer had just taken to be claimed (`releaseGone`); or, whatever the queues
//     hold, after `maxQueuedMs` (an hour): a backstop for queues never seen empty, e.g. under load
//     that never lets up. A purged queue, or a send lost in a crash after the fan-out's commit,
//     thus comes back within a couple of graces once the queues are idle, and a backlog still on
//     the queue is sent again at most once an hour instead of every minute.
// What can still be sent twice (the claim dedupes, as for any duplicate): on RabbitMQ the depth does
// not count other processes' unacked messages, so one of those still unclaimed a grace after the
// look; and one whose send landed only after the look and then waited a grace on the queue.
import type { Broker } from '../broker/broker.ts';
import type { Database } from '../db/database.ts';
import { withTransaction } from '../db/transaction.ts';
import { withDeadline } from '../deadline.ts';
import { clearEnqueued } from '../db/webhook-deliveries.sql.ts';
import { confirmEnqueued, holdDeliveries, oldestEnqueued, reclaimExpired, releaseGone, releaseUnsent, takeDue } from '../db/webhook-dispatch.sql.ts';
import { disableFailingSubscriptions } from '../db/webhook-subscriptions.sql.ts';
import { newEvent } from '../domain/events.ts';
import type { Logger } from '../observability/logger.ts';
import { webhookDeliveriesTotal } from '../observability/metrics.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';
import { Queues } from '../broker/topology.ts';
import { drainChunks, oneAtATime } from '../timers/passes.ts';
import { enqueueDeliveries } from './outbound-queue.ts';

/** A look at the queues that takes longer is given up (the pass goes on; it looks again later). */
const QUEUE_LOOK_TIMEOUT_MS = 5_000;

export type SchedulerOptions = {
  db: Database;
  broker: Broker;
  logger: Logger;
  /** Attempts a delivery gets when its subscription does not say (schedule length + 1). */
  defaultMaxAttempts: number;
  disableAfterDays: number;
  pollMs?: number;
  batchSize?: number;
  /**
   * A delivery a scheduler marked enqueued but never confirmed as sent is enqueued again after this
   * long (that scheduler stopped in between); and any marked one this long after the webhook queues
   * were seen empty (its message was lost). One minute by default.
   */
  enqueueGraceMs?: number;
  /** A delivery marked enqueued is taken as lost after this long whatever the queues hold (one hour by default). */
  maxQueuedMs?: number;
  disableCheckEveryMs?: number;
};

export type WebhookScheduler = {
  name: string;
  /** Run a pass at `atMs` (or at the next poll, whichever is first). */
  wakeAt(atMs: number): void;
  /** A pass that starts now, or right after the running one; resolves when it is done (tests,
   * and callers that just made rows due). */
  runOnce(): Promise<void>;
  stop(): Promise<void>;
};

export function startScheduler(opts: SchedulerOptions): WebhookScheduler {
  const { db, broker } = opts;
  const log = opts.logger.child({ component: 'webhook-scheduler' });
  const pollMs = opts.pollMs ?? 1000;
  const batchSize = opts.batchSize ?? 500;
  const graceMs = opts.enqueueGraceMs ?? 60_000;
  const maxQueuedMs = opts.maxQueuedMs ?? 3_600_000;
  /** How often, at most, the queues are looked at while a mark is older than the grace. */
  const lookEveryMs = Math.min(graceMs, 10_000);
  const disableEveryMs = opts.disableCheckEveryMs ?? 60_000;
  let lastDisableCheck = 0;
  let lastLook = -Infinity;
  /**
   * The database's time just before the webhook queues were last seen empty, and our clock then;
   * used (and forgotten) once a grace has passed: what was marked before it and still is, is lost.
   */
  let seenEmpty: { dbAt: Date; localMs: number } | undefined;
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let timerAt = Infinity;

  async function reclaim(): Promise<void> {
    for (;;) {
      const rows = await reclaimExpired(db, { limit: batchSize, defaultMaxAttempts: opts.defaultMaxAttempts });
      const dead = rows.filter((r) => r.status === 'dead').length;
      if (dead) webhookDeliveriesTotal.inc({ result: 'dead' }, dead);
      if (rows.length) log.warn({ count: rows.length, dead }, 'webhook deliveries abandoned mid-attempt were taken back');
      if (rows.length < batchSize) return;
    }
  }

  /** Both webhook queues hold nothing: no message ready, in flight or waiting for a retry. */
  async function queuesEmpty(): Promise<boolean> {
    try {
      const stats = await withDeadline(broker.stats([Queues.webhooksOutbound, Queues.webhooksDue]), QUEUE_LOOK_TIMEOUT_MS, 'looking at the webhook queues timed out');
      return stats.every((q) => q.depth === 0 && q.retrying === 0);
    } catch (err) {
      log.warn({ err }, 'could not look at the webhook queues; lost messages are looked for later');
      return false;
    }
  }

  async function releaseLostMessages(): Promise<void> {
    let unsent = 0;
    await drainChunks(async (limit) => {
      const { entries, released } = await releaseUnsent(db, { graceMs, limit });
      unsent += released;
      return entries;
    }, 10, () => stopped);
    if (unsent) log.warn({ count: unsent }, 'webhook deliveries marked by a scheduler that stopped before sending them are enqueued again');
    // Seen empty a grace ago: what was marked before then and still is has no message — one a
    // consumer had just taken when we looked has had a grace to be claimed.
    const empty = seenEmpty && Date.now() - seenEmpty.localMs >= graceMs ? seenEmpty : undefined;
    const gone = await drainChunks((limit) => releaseGone(db, { ...(empty && { before: empty.dbAt }), olderThanMs: maxQueuedMs, limit }), batchSize, () => stopped);
    if (gone) log.warn({ count: gone }, 'webhook deliveries whose queue message was lost are enqueued again');
    if (empty) seenEmpty = undefined;
    // Look at the queues only when a mark is older than the grace (a message may be lost), and not
    // at every pass: on the Postgres-backed queue a look counts its messages.
    if (seenEmpty || Date.now() - lastLook < lookEveryMs) return;
    lastLook = Date.now();
    const { now, oldest } = await oldestEnqueued(db);
    if (oldest && now.getTime() - oldest.getTime() >= graceMs && (await queuesEmpty())) seenEmpty = { dbAt: now, localMs: Date.now() };
  }

  async function enqueueDue(): Promise<void> {
    for (;;) {
      const { taken, journal, paused } = await takeDue(db, { limit: batchSize });
      if (taken.length > 0) {
        const ids = taken.map((r) => r.id);
        try {
          await enqueueDeliveries(broker, taken, Queues.webhooksDue);
        } catch (err) {
          // Hand them back to the next pass instead of leaving them marked as enqueued (should that
          // fail too, their journal entry brings them back after the grace).
          await clearEnqueued(db, { ids }).catch(() => {});
          throw err;
        }
        // Durable on the broker: from now on only a message lost from the queue makes them due
        // again. Should the confirm fail, those still unclaimed after the grace are sent again, once.
        if (journal !== undefined) {
          await confirmEnqueued(db, journal).catch((err: unknown) => log.warn({ err, count: ids.length }, 'could not record webhook deliveries as sent; they are sent again after the grace'));
        }
      }
      // Rows of paused subscriptions leave the index we walk; one a resume holds is left for the
      // next pass (and so are the rows behind it, a pass later).
      const held = await holdDeliveries(db, paused);
      if (taken.length + paused.length < batchSize || held < paused.length) return;
    }
  }

  async function disableFailing(): Promise<void> {
    const disabled = await withTransaction(db, async (tx) => {
      const list = await disableFailingSubscriptions(tx, opts.disableAfterDays);
      await appendEvents(
        tx,
        list.map((d) =>
          newEvent('webhook.endpoint_disabled', {
            projectId: d.projectId,
            aggregateId: d.id,
            data: {
              subscription_id: d.id,
              url: d.url,
              reason: 'failing',
              last_status_code: d.lastStatusCode,
              last_error: d.lastError,
              failing_since: d.failingSince ? d.failingSince.toISOString() : null,
            },
          }),
        ),
      );
      return list;
    });
    for (const d of disabled) {
      webhookDeliveriesTotal.inc({ result: 'disabled' });
      log.warn({ subscription_id: d.id, url: d.url, failing_since: d.failingSince }, `webhook subscription disabled: failing for ${opts.disableAfterDays} days`);
    }
  }

  async function pass(): Promise<void> {
    await reclaim();
    await releaseLostMessages();
    await enqueueDue();
    if (Date.now() - lastDisableCheck >= disableEveryMs) {
      lastDisableCheck = Date.now();
      await disableFailing();
    }
  }

  // Passes never overlap; a call made during one gets the next (passes.ts). None starts once stopped.
  const passes = oneAtATime(() =>
    stopped ? Promise.resolve() : pass().catch((err) => log.warn({ err }, 'webhook scheduler pass failed; retrying at the next poll')),
  );
  const runOnce = (): Promise<void> => (stopped ? Promise.resolve() : passes.run());

  function arm(atMs: number): void {
    if (stopped || atMs >= timerAt) return;
    clearTimeout(timer);
    // Node fires a timer longer than 2^31 − 1 ms at once: a far wake-up is a poll's instead (every
    // pass arms the next poll anyway).
    const delay = Math.min(Math.max(0, atMs - Date.now()), pollMs);
    timerAt = Date.now() + delay;
    timer = setTimeout(
      () => {
        timer = undefined;
        timerAt = Infinity;
        void runOnce().finally(() => arm(Date.now() + pollMs));
      },
      delay,
    );
    timer.unref();
  }

  arm(Date.now());

  return {
    name: 'webhook-scheduler',
    // A few ms late on purpose: the row's due time was computed on our clock, `now()` in SQL is the
    // database's, and a pass that arrives a hair early finds nothing due and waits a whole poll.
    wakeAt: (atMs) => arm(Math.max(atMs + 10, Date.now())),
    runOnce,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await passes.idle();
    },
  };
}
