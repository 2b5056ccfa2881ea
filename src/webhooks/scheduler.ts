// The webhook scheduler: the loop that makes Postgres-held delays happen. Each pass
//   1. takes `sending` rows whose lease expired (their dispatcher died): the attempt is recorded
//      as interrupted and the delivery is due again (or dead, if that was its last attempt);
//   2. enqueues due `pending`/`retrying` rows of unpaused subscriptions onto webhooks.due;
//   3. now and then, disables subscriptions failing for WEBHOOK_DISABLE_AFTER_DAYS.
// It runs every `pollMs`, and sooner when the dispatcher says a retry comes due earlier. Several
// schedulers (one per worker process) share the work through SKIP LOCKED; none is special.
import type { Broker } from '../broker/broker.ts';
import type { Database } from '../db/database.ts';
import { withTransaction } from '../db/transaction.ts';
import { clearEnqueued } from '../db/webhook-deliveries.sql.ts';
import { reclaimExpired, takeDue } from '../db/webhook-dispatch.sql.ts';
import { disableFailingSubscriptions } from '../db/webhook-subscriptions.sql.ts';
import { newEvent } from '../domain/events.ts';
import type { Logger } from '../observability/logger.ts';
import { webhookDeliveriesTotal } from '../observability/metrics.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';
import { Queues } from '../broker/topology.ts';
import { oneAtATime } from '../timers/passes.ts';
import { enqueueDeliveries } from './outbound-queue.ts';

export type SchedulerOptions = {
  db: Database;
  broker: Broker;
  logger: Logger;
  /** Attempts a delivery gets when its subscription does not say (schedule length + 1). */
  defaultMaxAttempts: number;
  disableAfterDays: number;
  pollMs?: number;
  batchSize?: number;
  /** An enqueued row still due after this long is enqueued again (its message was lost). */
  enqueueGraceMs?: number;
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
  const disableEveryMs = opts.disableCheckEveryMs ?? 60_000;
  let lastDisableCheck = 0;
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

  async function enqueueDue(): Promise<void> {
    for (;;) {
      const rows = await takeDue(db, { limit: batchSize, graceMs });
      if (rows.length === 0) return;
      try {
        await enqueueDeliveries(broker, rows, Queues.webhooksDue);
      } catch (err) {
        // Hand them back to the next pass instead of leaving them marked as enqueued.
        await clearEnqueued(db, { ids: rows.map((r) => r.id) }).catch(() => {});
        throw err;
      }
      if (rows.length < batchSize) return;
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
