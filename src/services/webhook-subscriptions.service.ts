// Webhook subscriptions and their deliveries: the use cases behind /webhook-subscriptions and
// /webhook-deliveries. Secrets are sealed with SECRET_KEY before they reach the database and
// leave this module in clear only once — in the answer to create or rotate.
import type { Broker } from '../broker/broker.ts';
import type { Database, Queryable } from '../db/database.ts';
import { pageOf, type Page } from '../db/keyset.ts';
import { withTransaction } from '../db/transaction.ts';
import {
  clearEnqueued, findDelivery, insertDeliveries, listAttempts, listDeliveries, requeueDead, requeueDelivery,
  type AttemptRecord, type DeliveryRecord, type DeliveryStatus,
} from '../db/webhook-deliveries.sql.ts';
import {
  bringDeliveriesForward, deleteSubscription, findSubscription, insertSubscription, listSubscriptions, updateSubscription,
  type SubscriptionChanges, type SubscriptionRecord,
} from '../db/webhook-subscriptions.sql.ts';
import { EVENT_CATALOGUE, EVENT_TYPES, newEvent } from '../domain/events.ts';
import { uuidv7 } from '../domain/ids.ts';
import { sealJson } from '../domain/secret-box.ts';
import { AppError, notFound } from '../errors.ts';
import { enqueueDeliveries, type OutboundItem } from '../webhooks/outbound-queue.ts';
import { Queues } from '../broker/topology.ts';
import { generateSecret, openSecrets, validateSecret, buildWebhookBody } from '../webhooks/signer.ts';
import { checkWebhookUrl, type ResolveHost } from '../webhooks/ssrf-guard.ts';
import { checkEvents, checkHeaders } from '../webhooks/subscription-input.ts';

/** How long the previous secret keeps signing after a rotation. */
export const ROTATION_OVERLAP_MS = 24 * 3_600_000;
/** Secrets replaced within the overlap that still sign beside the current one, at most. */
export const MAX_PREVIOUS_SECRETS = 4;

export type SubscriptionView = Omit<SubscriptionRecord, 'secret' | 'previousSecret' | 'maxAttempts' | 'timeoutSeconds'> & {
  /** Effective values: the subscription's own, or the server defaults. */
  maxAttempts: number;
  timeoutSeconds: number;
};

export type SubscriptionInput = {
  name?: string | null;
  url: string;
  events: string[];
  headers?: Record<string, unknown>;
  secret?: string;
  maxAttempts?: number | null;
  timeoutSeconds?: number | null;
  rateLimitPerSecond?: number | null;
  active?: boolean;
};

export type SubscriptionUpdate = Partial<Omit<SubscriptionInput, 'secret'>>;

export type WebhookSubscriptionsDeps = {
  db: Database;
  broker: Broker;
  secretKey: string;
  allowPrivateUrls: boolean;
  retryScheduleMs: readonly number[];
  defaultTimeoutMs: number;
  /** DNS for the save-time SSRF check (tests inject one). */
  resolve?: ResolveHost;
};

export function makeWebhookSubscriptionsService(deps: WebhookSubscriptionsDeps) {
  const { db, secretKey } = deps;
  const tenant = <T>(projectId: string, fn: (tx: Queryable) => Promise<T>) => withTransaction(db, fn, { projectId });

  const view = (s: SubscriptionRecord): SubscriptionView => {
    const { secret: _s, previousSecret: _p, ...rest } = s;
    return {
      ...rest,
      // The previous secret's expiry only matters while it is still signing.
      previousSecretExpiresAt: s.previousSecretExpiresAt && s.previousSecretExpiresAt > new Date() ? s.previousSecretExpiresAt : null,
      maxAttempts: s.maxAttempts ?? deps.retryScheduleMs.length + 1,
      timeoutSeconds: s.timeoutSeconds ?? Math.ceil(deps.defaultTimeoutMs / 1000),
    };
  };

  const checkUrl = async (url: string) => (await checkWebhookUrl(url, { allowPrivate: deps.allowPrivateUrls, ...(deps.resolve && { resolve: deps.resolve }) })).toString();

  async function mustFind(tx: Queryable, projectId: string, id: string, lock = false): Promise<SubscriptionRecord> {
    const s = await findSubscription(tx, projectId, id, lock);
    if (!s) throw notFound('webhook subscription');
    return s;
  }

  const mustBeActive = (s: SubscriptionRecord) => {
    if (!s.active) throw new AppError('conflict', `the subscription is disabled${s.disabledReason ? ` (${s.disabledReason})` : ''}; set active to true first`);
  };
  /** A retry or a recovery sends now: on a paused subscription it would only wait, answered 202. */
  const mustBeSending = (s: SubscriptionRecord) => {
    mustBeActive(s);
    if (s.paused) throw new AppError('conflict', 'the subscription is paused: its deliveries wait until it is resumed; resume it first');
  };

  /** Sends after commit; if the broker refuses, the scheduler picks the rows up instead. */
  async function enqueue(items: OutboundItem[]): Promise<void> {
    try {
      await enqueueDeliveries(deps.broker, items, Queues.webhooksOutbound);
    } catch {
      await clearEnqueued(db, { ids: items.map((i) => i.id) }).catch(() => {});
    }
  }

  return {
    availableEvents: () => EVENT_TYPES.map((type) => ({ type, description: EVENT_CATALOGUE[type].description })),

    async create(projectId: string, input: SubscriptionInput): Promise<{ subscription: SubscriptionView; secret: string }> {
      const events = checkEvents(input.events);
      const headers = checkHeaders(input.headers ?? {});
      if (input.secret !== undefined) validateSecret(input.secret);
      const url = await checkUrl(input.url);
      const secret = input.secret ?? generateSecret();
      const record = await tenant(projectId, (tx) =>
        insertSubscription(tx, {
          id: uuidv7(),
          projectId,
          name: input.name ?? null,
          url,
          events,
          headers,
          secret: sealJson(secretKey, secret),
          maxAttempts: input.maxAttempts ?? null,
          timeoutSeconds: input.timeoutSeconds ?? null,
          rateLimitPerSecond: input.rateLimitPerSecond ?? null,
          active: input.active ?? true,
        }),
      );
      return { subscription: view(record), secret };
    },

    async list(projectId: string, query: { limit?: number; cursor?: string }): Promise<Page<SubscriptionView>> {
      const page = await tenant(projectId, (tx) => listSubscriptions(tx, { ...pageOf(query), projectId }));
      return { rows: page.rows.map(view), nextCursor: page.nextCursor };
    },

    async get(projectId: string, id: string): Promise<SubscriptionView> {
      return view(await tenant(projectId, (tx) => mustFind(tx, projectId, id)));
    },

    async update(projectId: string, id: string, input: SubscriptionUpdate): Promise<SubscriptionView> {
      const changes: SubscriptionChanges = {
        name: input.name,
        maxAttempts: input.maxAttempts,
        timeoutSeconds: input.timeoutSeconds,
        rateLimitPerSecond: input.rateLimitPerSecond,
        active: input.active,
      };
      if (input.events !== undefined) changes.events = checkEvents(input.events);
      if (input.headers !== undefined) changes.headers = checkHeaders(input.headers);
      if (input.url !== undefined) changes.url = await checkUrl(input.url);
      const record = await tenant(projectId, async (tx) => {
        // Another URL, or turned back on: a new start for the endpoint (migration 016 tells the
        // dispatchers' circuit breakers), and what waited because of the old one goes now.
        const before = changes.url !== undefined || changes.active === true ? await mustFind(tx, projectId, id, true) : undefined;
        const r = await updateSubscription(tx, projectId, id, changes);
        if (!r) throw notFound('webhook subscription');
        if (before && r.active && (before.url !== r.url || !before.active)) await bringDeliveriesForward(tx, id);
        return r;
      });
      return view(record);
    },

    async remove(projectId: string, id: string): Promise<void> {
      const done = await tenant(projectId, (tx) => deleteSubscription(tx, projectId, id));
      if (!done) throw notFound('webhook subscription');
    },

    /**
     * A new secret; the one it replaces keeps signing for ROTATION_OVERLAP_MS. Rotating again within
     * that time keeps the earlier ones signing too (up to MAX_PREVIOUS_SECRETS, newest first), until
     * ROTATION_OVERLAP_MS after the latest rotation: a receiver still on any of them keeps verifying.
     */
    async rotateSecret(projectId: string, id: string, given?: string): Promise<{ secret: string; previousSecretExpiresAt: Date }> {
      if (given !== undefined) validateSecret(given);
      const secret = given ?? generateSecret();
      const now = Date.now();
      const expires = new Date(now + ROTATION_OVERLAP_MS);
      await tenant(projectId, async (tx) => {
        const current = await mustFind(tx, projectId, id, true);
        // A secret that no longer opens (sealed under another SECRET_KEY) cannot sign anything: it is
        // left out, and the rotation, which is how such a subscription is mended, still goes through.
        const opened = (sealed: string) => {
          try {
            return openSecrets(secretKey, sealed);
          } catch {
            return [];
          }
        };
        const stillSigning = current.previousSecret && current.previousSecretExpiresAt && current.previousSecretExpiresAt.getTime() > now
          ? opened(current.previousSecret)
          : [];
        const previous = [...opened(current.secret), ...stillSigning].slice(0, MAX_PREVIOUS_SECRETS);
        await updateSubscription(tx, projectId, id, {
          secret: sealJson(secretKey, secret),
          previousSecret: previous.length > 0 ? sealJson(secretKey, previous) : null,
          previousSecretExpiresAt: previous.length > 0 ? expires : null,
        });
      });
      return { secret, previousSecretExpiresAt: expires };
    },

    async setPaused(projectId: string, id: string, paused: boolean): Promise<SubscriptionView> {
      const record = await tenant(projectId, async (tx) => {
        const r = await updateSubscription(tx, projectId, id, { paused });
        if (!r) throw notFound('webhook subscription');
        // Deliveries bounced while paused are marked enqueued; let the scheduler take them now.
        if (!paused) await clearEnqueued(tx, { subscriptionId: id });
        return r;
      });
      return view(record);
    },

    /** A webhook.test event for this subscription only (no fan-out, not in the event log). */
    async sendTest(projectId: string, id: string): Promise<DeliveryRecord> {
      const delivery = await tenant(projectId, async (tx) => {
        const s = await mustFind(tx, projectId, id);
        // Paused, the test would only wait until the resume, answered 202.
        mustBeSending(s);
        const event = newEvent('webhook.test', {
          projectId,
          aggregateId: s.id,
          data: { subscription_id: s.id, message: 'A test event from Ventros CRM: your endpoint receives and verifies webhooks.' },
        });
        const [created] = await insertDeliveries(tx, projectId, [{ id: uuidv7(), subscriptionId: s.id, eventId: event.id, eventType: event.type, body: buildWebhookBody(event) }], { manual: true });
        return (await findDelivery(tx, projectId, created.id))!;
      });
      await enqueue([{ id: delivery.id, subscriptionId: delivery.subscriptionId, projectId, manual: true }]);
      return delivery;
    },

    async listDeliveries(projectId: string, query: { subscriptionId?: string; status?: DeliveryStatus; limit?: number; cursor?: string }): Promise<Page<DeliveryRecord>> {
      return tenant(projectId, async (tx) => {
        if (query.subscriptionId !== undefined) await mustFind(tx, projectId, query.subscriptionId);
        return listDeliveries(tx, { ...query, projectId });
      });
    },

    async getDelivery(projectId: string, id: string): Promise<DeliveryRecord & { attemptLog: AttemptRecord[] }> {
      return tenant(projectId, async (tx) => {
        const d = await findDelivery(tx, projectId, id);
        if (!d) throw notFound('webhook delivery');
        return { ...d, attemptLog: await listAttempts(tx, id) };
      });
    },

    /** Manual retry of one delivery: due now, one more attempt. */
    async retryDelivery(projectId: string, id: string): Promise<DeliveryRecord> {
      const d = await tenant(projectId, async (tx) => {
        const current = await findDelivery(tx, projectId, id);
        if (!current) throw notFound('webhook delivery');
        mustBeSending(await mustFind(tx, projectId, current.subscriptionId));
        const r = await requeueDelivery(tx, projectId, id);
        if (!r) throw new AppError('conflict', 'an attempt of this delivery is in progress; retry once it has finished');
        return r;
      });
      await enqueue([{ id: d.id, subscriptionId: d.subscriptionId, projectId, manual: true }]);
      return d;
    },

    /** Re-sends every dead delivery of the subscription created at or after `since`. */
    async recover(projectId: string, subscriptionId: string, since: Date): Promise<{ recovered: number }> {
      // The scheduler sends them, a batch at a time, within its next pass (on webhooks.due, not in
      // front of every project's new deliveries on webhooks.outbound).
      const recovered = await tenant(projectId, async (tx) => {
        mustBeSending(await mustFind(tx, projectId, subscriptionId));
        return requeueDead(tx, projectId, subscriptionId, since);
      });
      return { recovered };
    },
  };
}

export type WebhookSubscriptionsService = ReturnType<typeof makeWebhookSubscriptionsService>;
