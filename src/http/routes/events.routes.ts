// The project's event log: published domain events, newest first.
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app.ts';
import { makeAdminService } from '../../services/admin.service.ts';
import { EventQuery, EventSchema, presentEvent } from '../schemas/admin.ts';
import { Page, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';

export async function eventsRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const admin = makeAdminService(deps);

  defineRoute(app, {
    method: 'GET',
    url: '/events',
    summary: "The project's event log, newest first",
    description: 'Events appear once published to the broker (normally within milliseconds) and are kept EVENT_RETENTION_DAYS.',
    permission: 'events.read',
    querystring: EventQuery,
    response: { 200: Page(EventSchema) },
    handler: async (req) => {
      const { type, aggregate_id, since, until, limit, cursor } = req.query;
      return toPageBody(await admin.events(req.auth, { type, aggregateId: aggregate_id, since, until, limit, cursor }), presentEvent);
    },
  });
}
