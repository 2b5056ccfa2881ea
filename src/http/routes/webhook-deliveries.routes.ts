// /webhook-deliveries: every delivery of the project with its attempt log, and manual retry. Dead
// deliveries are this flow's dead-letter queue: visible here, replayable by retry (one) or by
// POST /webhook-subscriptions/{id}/recover (all since a time).
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from '../app.ts';
import { IdParams, ListQuery, Page, Uuid, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';
import { Delivery, DeliveryStatusParam, DeliveryWithAttempts, presentDelivery, presentDeliveryDetail } from '../schemas/webhooks.ts';
import { webhookService } from './webhook-subscriptions.routes.ts';

const TAGS = ['webhooks'];

export async function webhookDeliveriesRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const hooks = () => webhookService(deps);

  defineRoute(app, {
    method: 'GET',
    url: '/webhook-deliveries',
    summary: "The project's webhook deliveries, newest first",
    description: 'Filter by status (dead = the deliveries that gave up) and by subscription.',
    permission: 'webhooks.read',
    tags: TAGS,
    querystring: ListQuery({ status: Type.Optional(DeliveryStatusParam), subscription_id: Type.Optional(Uuid) }),
    response: { 200: Page(Delivery) },
    handler: async (req) => {
      const { subscription_id, ...rest } = req.query;
      return toPageBody(await hooks().listDeliveries(req.auth.projectId, { ...rest, ...(subscription_id && { subscriptionId: subscription_id }) }), presentDelivery);
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/webhook-deliveries/:id',
    summary: 'A delivery with every attempt (time, status code, duration, error, response excerpt)',
    permission: 'webhooks.read',
    tags: TAGS,
    params: IdParams,
    response: { 200: DeliveryWithAttempts },
    handler: async (req) => presentDeliveryDetail(await hooks().getDelivery(req.auth.projectId, req.params.id)),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/webhook-deliveries/:id/retry',
    summary: 'Send a delivery again now (one more attempt)',
    permission: 'webhooks.manage',
    tags: TAGS,
    params: IdParams,
    response: { 202: Delivery },
    problems: { 409: 'An attempt is in progress, or the subscription is disabled' },
    handler: async (req, reply) => reply.code(202).send(presentDelivery(await hooks().retryDelivery(req.auth.projectId, req.params.id))),
  });
}
