// The fan-out: a consumer of every domain event that turns it into one delivery per matching
// active subscription of the event's own project, then puts the new delivery ids on
// webhooks.outbound.
//
// Idempotent twice over, like every consumer: the events are recorded in processed_events in the
// same transaction as the deliveries (handleOnce's rule, applied to a batch), and a (subscription,
// event) pair is unique — a redelivered event creates nothing and sends nothing.
//
// Events of one project that arrive together share one transaction: under load the broker hands
// us dozens at a time, and one commit for all of them instead of one each is what lets the
// fan-out keep up with the dispatchers. Each project's active subscriptions are cached, and the
// cache entry dropped when the database announces a change (a trigger on the table): most events
// match no subscription, and those then cost no database work at all.
import type { Broker, Delivery, Handler } from '../broker/broker.ts';
import type { Database } from '../db/database.ts';
import { UNHEARD_CACHE_MS, keepListening } from '../db/keep-listening.ts';
import { withTransaction } from '../db/transaction.ts';
import { clearEnqueued, insertDeliveriesOnce, type NewDelivery } from '../db/webhook-deliveries.sql.ts';
import { activeSubscriptions } from '../db/webhook-subscriptions.sql.ts';
import { matchesEventFilter } from '../domain/event-filter.ts';
import type { EventEnvelope } from '../domain/events.ts';
import { uuidv7 } from '../domain/ids.ts';
import { makeBatcher } from '../inbound/batcher.ts';
import type { Logger } from '../observability/logger.ts';
import { parseEventOrSkip } from '../outbox/idempotent.ts';
import { enqueueDeliveries, type OutboundItem } from './outbound-queue.ts';
import { buildWebhookBody } from './signer.ts';

export const FANOUT_CONSUMER = 'webhook-fanout';
export const FANOUT_QUEUE = 'consumer.webhook-fanout';

/** NOTIFY channel of migration 008's trigger; the payload is the project id. */
export const SUBSCRIPTION_CHANGES = 'ventros_webhook_subscriptions';
/** A cache entry is trusted this long even without a notification (a lost LISTEN connection). */
const CACHE_TTL_MS = 30_000;

type ActiveSubscription = { id: string; events: string[] };

export type Fanout = { handle: Handler; stop(): Promise<void> };

export async function startFanout(deps: { db: Database; broker: Broker; logger: Logger }): Promise<Fanout> {
  const { db, broker } = deps;
  const log = deps.logger.child({ component: FANOUT_CONSUMER });

  const cache = new Map<string, { subs: ActiveSubscription[]; expires: number }>();
  // Bumped by each notification, so a load that raced one is not cached as if it were fresh.
  const versions = new Map<string, number>();
  // Bumped when the listening connection is back after a drop: every cached list may be stale.
  let epoch = 0;
  const listening = keepListening(
    db,
    SUBSCRIPTION_CHANGES,
    (projectId) => {
      cache.delete(projectId);
      versions.set(projectId, (versions.get(projectId) ?? 0) + 1);
    },
    {
      logger: log,
      what: 'webhook subscription changes',
      fallback: `caching subscriptions for ${UNHEARD_CACHE_MS / 1000} s only`,
      onResume: () => {
        epoch++;
        cache.clear();
      },
    },
  );
  await listening.first;

  async function subscriptionsOf(projectId: string): Promise<ActiveSubscription[]> {
    const hit = cache.get(projectId);
    if (hit && Date.now() < hit.expires) return hit.subs;
    const version = versions.get(projectId) ?? 0;
    const loadedIn = epoch;
    // Loaded while no notification could drop it: kept briefly.
    const expires = Date.now() + (listening.heard ? CACHE_TTL_MS : UNHEARD_CACHE_MS);
    const subs = await withTransaction(db, (tx) => activeSubscriptions(tx, projectId), { projectId });
    if ((versions.get(projectId) ?? 0) === version && epoch === loadedIn) {
      if (cache.size >= 10_000) cache.clear();
      cache.set(projectId, { subs, expires });
    }
    return subs;
  }

  /** One transaction for a project's events: mark them processed, create their deliveries. */
  async function fanOut(projectId: string, events: EventEnvelope[]): Promise<void[]> {
    const subs = await subscriptionsOf(projectId);
    const wanted = events.filter((e) => subs.some((s) => matchesEventFilter(s.events, e.type)));
    if (wanted.length === 0) return events.map(() => undefined);
    const rows: NewDelivery[] = [];
    const seen = new Set<string>();
    for (const e of wanted) {
      if (seen.has(e.id)) continue; // the same event twice in this batch
      seen.add(e.id);
      const body = buildWebhookBody(e);
      for (const s of subs) {
        if (matchesEventFilter(s.events, e.type)) rows.push({ id: uuidv7(), subscriptionId: s.id, eventId: e.id, eventType: e.type, body });
      }
    }
    // One statement: the events are recorded as processed, and only those seen for the first
    // time get deliveries.
    const created: OutboundItem[] = await withTransaction(
      db,
      async (tx) => (await insertDeliveriesOnce(tx, projectId, FANOUT_CONSUMER, rows)).map((r) => ({ ...r, projectId })),
      { projectId },
    );
    if (created.length > 0) {
      // The rows were committed marked enqueued (and counted as sent: see insertDeliveries). Should
      // this process stop before the send, its event is not fanned out again (it is processed):
      // the scheduler finds the marks without messages once the webhook queues are seen empty, or
      // after its backstop (scheduler.ts, "Lost messages").
      try {
        await enqueueDeliveries(broker, created);
      } catch (err) {
        // The rows are committed and due: the scheduler enqueues them at its next pass. Failing
        // the messages would only redeliver events that are now marked processed.
        log.warn({ err, deliveries: created.length }, 'could not enqueue new webhook deliveries; the scheduler will');
        await clearEnqueued(db, { ids: created.map((c) => c.id) }).catch(() => {});
      }
    }
    return events.map(() => undefined);
  }

  const batcher = makeBatcher<EventEnvelope, void>(fanOut, { maxBatch: 100, maxInflight: db.kind === 'pglite' ? 1 : 4 });

  const handle = async (msg: Delivery) => {
    const event = parseEventOrSkip(msg, log);
    // Test events go to one subscription directly (POST …/test), never through the fan-out.
    if (!event?.project_id || event.type === 'webhook.test') return;
    await batcher.submit(event.project_id, event);
  };

  return { handle, stop: () => listening.stop() };
}
