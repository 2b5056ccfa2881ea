// /sessions: conversation sessions (read side) and a session's messages in conversation order.
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app.ts';
import { makeSessionsService } from '../../services/sessions.service.ts';
import { IdParams, ListQuery, Page, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';
import { Message, presentMessage } from '../schemas/message.schemas.ts';
import { presentSession, Session, SessionListQuery } from '../schemas/session.schemas.ts';

export async function sessionsRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const sessions = makeSessionsService(deps);

  defineRoute(app, {
    method: 'GET',
    url: '/sessions',
    summary: 'List sessions, newest first by start',
    permission: 'sessions.read',
    querystring: SessionListQuery,
    response: { 200: Page(Session) },
    handler: async (req) => {
      const { status, contact_id, channel_id, limit, cursor } = req.query;
      const page = await sessions.list(req.auth.projectId, { status, contactId: contact_id, channelId: channel_id, limit, cursor });
      return toPageBody(page, presentSession);
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/sessions/:id',
    summary: 'Get a session with its counters',
    permission: 'sessions.read',
    params: IdParams,
    response: { 200: Session },
    handler: async (req) => presentSession(await sessions.get(req.auth.projectId, req.params.id)),
  });

  defineRoute(app, {
    method: 'GET',
    url: '/sessions/:id/messages',
    summary: "A session's messages, oldest first by provider timestamp",
    tags: ['sessions', 'messages'],
    permission: 'messages.read',
    params: IdParams,
    querystring: ListQuery(),
    response: { 200: Page(Message) },
    handler: async (req) => toPageBody(await sessions.messages(req.auth.projectId, req.params.id, req.query), presentMessage),
  });
}
