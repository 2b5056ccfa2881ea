// /messages: the read side (sending is POST /messages, a separate use case).
import type { FastifyInstance } from 'fastify';
import type { AppDeps } from '../app.ts';
import { makeMessagesService } from '../../services/messages.service.ts';
import { IdParams, Page, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';
import { Message, MessageListQuery, presentMessage } from '../schemas/message.schemas.ts';

export async function messagesRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const messages = makeMessagesService(deps);

  defineRoute(app, {
    method: 'GET',
    url: '/messages',
    summary: 'List messages, newest first by provider timestamp',
    permission: 'messages.read',
    querystring: MessageListQuery,
    response: { 200: Page(Message) },
    handler: async (req) => {
      const { contact_id, session_id, limit, cursor } = req.query;
      return toPageBody(await messages.list(req.auth.projectId, { contactId: contact_id, sessionId: session_id, limit, cursor }), presentMessage);
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/messages/:id',
    summary: 'Get a message',
    permission: 'messages.read',
    params: IdParams,
    response: { 200: Message },
    handler: async (req) => presentMessage(await messages.get(req.auth.projectId, req.params.id)),
  });
}
