// POST /sessions/{id}/close: a person ends a conversation now (the inactivity timer ends the
// others). The read side of /sessions lives in sessions.routes.ts.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from '../app.ts';
import { makeSessionLifecycle, MANUAL_END_REASONS } from '../../services/session-lifecycle.service.ts';
import { IdParams } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';
import { presentSession, Session } from '../schemas/session.schemas.ts';

const CloseBody = Type.Object(
  {
    reason: Type.Unsafe<(typeof MANUAL_END_REASONS)[number]>({
      type: 'string',
      enum: [...MANUAL_END_REASONS],
      description: 'Why the conversation ended; it goes into end_reason and the session.ended event',
    }),
  },
  { additionalProperties: false },
);

export async function sessionActionsRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const lifecycle = makeSessionLifecycle({ db: deps.db });

  defineRoute(app, {
    method: 'POST',
    url: '/sessions/:id/close',
    summary: 'End an active session now',
    description: 'Emits session.ended with the counters and stops the inactivity timer. A new message from the contact opens a new session.',
    permission: 'sessions.write',
    params: IdParams,
    body: CloseBody,
    response: { 200: Session },
    problems: { 409: 'The session has already ended' },
    handler: async (req) => presentSession(await lifecycle.close(req.auth, req.params.id, req.body.reason)),
  });
}
