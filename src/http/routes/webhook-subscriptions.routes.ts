// /webhook-subscriptions: where a project's events are POSTed, signed. The secret is shown once,
// in the answer to create (and to rotate-secret); reads never show it.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { AppError, invalid } from '../../errors.ts';
import { makeWebhookSubscriptionsService, type WebhookSubscriptionsService } from '../../services/webhook-subscriptions.service.ts';
import type { AppDeps } from '../app.ts';
import { instant } from '../../domain/instant.ts';
import { IdParams, ListQuery, NoContent, Page, iso, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';
import {
  AvailableEvents, Delivery, DeliveryStatusParam, Recovered, RecoverBody, Rotated, Subscription, SubscriptionBody,
  SubscriptionPatch, SubscriptionWithSecret, presentDelivery, presentSubscription,
} from '../schemas/webhooks.ts';

const TAGS = ['webhooks'];

/** One service per app, built on first use (an app without a secret key still starts). */
const services = new WeakMap<AppDeps, WebhookSubscriptionsService>();

export function webhookService(deps: AppDeps): WebhookSubscriptionsService {
  let s = services.get(deps);
  if (!s) {
    const secretKey = deps.secretKey ?? deps.config.secretKey;
    if (!secretKey) throw new AppError('internal', 'no SECRET_KEY: webhook secrets cannot be sealed');
    s = makeWebhookSubscriptionsService({
      db: deps.db,
      broker: deps.broker,
      secretKey,
      allowPrivateUrls: deps.config.webhookAllowPrivateUrls,
      retryScheduleMs: deps.config.webhookRetryScheduleMs,
      defaultTimeoutMs: deps.config.webhookTimeoutMs,
    });
    services.set(deps, s);
  }
  return s;
}

export async function webhookSubscriptionsRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const hooks = () => webhookService(deps);

  defineRoute(app, {
    method: 'GET',
    url: '/webhook-subscriptions/available-events',
    summary: 'The event types a subscription can name, with a description each',
    permission: 'webhooks.read',
    tags: TAGS,
    response: { 200: AvailableEvents },
    handler: async () => ({ data: hooks().availableEvents() }),
  });

  defineRoute(app, {
    method: 'GET',
    url: '/webhook-subscriptions',
    summary: 'List webhook subscriptions, newest first',
    permission: 'webhooks.read',
    tags: TAGS,
    querystring: ListQuery(),
    response: { 200: Page(Subscription) },
    handler: async (req) => toPageBody(await hooks().list(req.auth.projectId, req.query), presentSubscription),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/webhook-subscriptions',
    summary: 'Subscribe a URL to events',
    description:
      'Unknown event types are refused with the list of valid ones. URLs must be http(s); private, loopback, link-local and metadata addresses are refused unless the server allows private URLs. The answer carries the signing secret, once.',
    permission: 'webhooks.manage',
    idempotent: true,
    tags: TAGS,
    body: SubscriptionBody,
    response: { 201: SubscriptionWithSecret },
    handler: async (req, reply) => {
      const b = req.body;
      const { subscription, secret } = await hooks().create(req.auth.projectId, {
        name: b.name,
        url: b.url,
        events: b.events,
        headers: b.headers,
        secret: b.secret,
        maxAttempts: b.max_attempts,
        timeoutSeconds: b.timeout_seconds,
        rateLimitPerSecond: b.rate_limit_per_second,
        active: b.active,
      });
      return reply
        .code(201)
        .header('location', `/api/v1/webhook-subscriptions/${subscription.id}`)
        .send({ ...presentSubscription(subscription), secret });
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/webhook-subscriptions/:id',
    summary: 'Get a webhook subscription, with its endpoint health',
    permission: 'webhooks.read',
    tags: TAGS,
    params: IdParams,
    response: { 200: Subscription },
    handler: async (req) => presentSubscription(await hooks().get(req.auth.projectId, req.params.id)),
  });

  defineRoute(app, {
    method: 'PATCH',
    url: '/webhook-subscriptions/:id',
    summary: 'Change a webhook subscription; `active: true` re-enables a disabled one',
    permission: 'webhooks.manage',
    tags: TAGS,
    params: IdParams,
    body: SubscriptionPatch,
    response: { 200: Subscription },
    handler: async (req) => {
      const b = req.body;
      const s = await hooks().update(req.auth.projectId, req.params.id, {
        name: b.name,
        url: b.url,
        events: b.events,
        headers: b.headers,
        maxAttempts: b.max_attempts,
        timeoutSeconds: b.timeout_seconds,
        rateLimitPerSecond: b.rate_limit_per_second,
        active: b.active,
      });
      return presentSubscription(s);
    },
  });

  defineRoute(app, {
    method: 'DELETE',
    url: '/webhook-subscriptions/:id',
    summary: 'Delete a webhook subscription and its delivery history',
    permission: 'webhooks.manage',
    tags: TAGS,
    params: IdParams,
    response: { 204: NoContent },
    handler: async (req, reply) => {
      await hooks().remove(req.auth.projectId, req.params.id);
      return reply.code(204).send();
    },
  });

  defineRoute(app, {
    method: 'POST',
    url: '/webhook-subscriptions/:id/rotate-secret',
    summary: 'Replace the signing secret; the previous one keeps signing for 24 h',
    description:
      'Until it expires, every delivery carries two signatures in webhook-signature (space-separated), so receivers can switch secrets without a gap. ' +
      'Optional body `{"secret": "whsec_…"}` to choose the new secret; without one it is generated.',
    permission: 'webhooks.manage',
    tags: TAGS,
    params: IdParams,
    // No body schema: the body is optional, and a schema would make an empty POST a 400.
    optionalBody: true,
    response: { 200: Rotated },
    handler: async (req) => {
      const body = req.body as Record<string, unknown> | null | undefined;
      // What a body schema would say (see above): only `secret` is known.
      if (body !== undefined && body !== null) {
        if (typeof body !== 'object' || Array.isArray(body)) throw invalid('the body is {"secret": "whsec_…"}, or nothing', [{ message: 'must be an object' }]);
        const unknown = Object.keys(body).filter((k) => k !== 'secret');
        if (unknown.length > 0) throw invalid(`${unknown.join(', ')}: not allowed`, unknown.map((field) => ({ field, message: 'is not allowed' })));
      }
      const given = body?.secret;
      const r = await hooks().rotateSecret(req.auth.projectId, req.params.id, given === undefined ? undefined : (given as string));
      return { secret: r.secret, previous_secret_expires_at: iso(r.previousSecretExpiresAt) };
    },
  });

  defineRoute(app, {
    method: 'POST',
    url: '/webhook-subscriptions/:id/test',
    summary: 'Send a webhook.test event to this subscription only',
    permission: 'webhooks.manage',
    tags: TAGS,
    params: IdParams,
    response: { 202: Delivery },
    problems: { 409: 'The subscription is disabled or paused' },
    handler: async (req, reply) => reply.code(202).send(presentDelivery(await hooks().sendTest(req.auth.projectId, req.params.id))),
  });

  for (const [action, paused] of [['pause', true], ['resume', false]] as const) {
    defineRoute(app, {
      method: 'POST',
      url: `/webhook-subscriptions/:id/${action}`,
      summary: paused ? 'Pause deliveries: they wait, without spending attempts, until resumed' : 'Resume a paused subscription; waiting deliveries go out',
      permission: 'webhooks.manage',
      tags: TAGS,
      params: IdParams,
      response: { 200: Subscription },
      handler: async (req) => presentSubscription(await hooks().setPaused(req.auth.projectId, req.params.id, paused)),
    });
  }

  defineRoute(app, {
    method: 'GET',
    url: '/webhook-subscriptions/:id/deliveries',
    summary: "A subscription's deliveries, newest first",
    permission: 'webhooks.read',
    tags: TAGS,
    params: IdParams,
    querystring: ListQuery({ status: Type.Optional(DeliveryStatusParam) }),
    response: { 200: Page(Delivery) },
    handler: async (req) =>
      toPageBody(await hooks().listDeliveries(req.auth.projectId, { ...req.query, subscriptionId: req.params.id }), presentDelivery),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/webhook-subscriptions/:id/recover',
    summary: 'Re-send every dead delivery created since a time',
    permission: 'webhooks.manage',
    tags: TAGS,
    params: IdParams,
    body: RecoverBody,
    response: { 202: Recovered },
    problems: { 409: 'The subscription is disabled' },
    handler: async (req, reply) => reply.code(202).send(await hooks().recover(req.auth.projectId, req.params.id, instant(req.body.since, 'since'))),
  });
}
