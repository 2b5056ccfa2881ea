// Admin views of the project's share of the machinery: queues, dead letters, parse errors.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from '../app.ts';
import { makeAdminService } from '../../services/admin.service.ts';
import {
  DeadLetterQuery,
  DeadLetterSchema,
  ParseErrorQuery,
  ParseErrorSchema,
  presentDeadLetter,
  presentParseError,
  presentQueue,
  QueueList,
} from '../schemas/admin.ts';
import { IdParams, Page, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';

export async function adminRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const admin = makeAdminService(deps);

  defineRoute(app, {
    method: 'GET',
    url: '/admin/queues',
    summary: 'Queues: depth, consumers, retrying, and your dead letters',
    description: 'Depth, retrying and consumers are shared by all projects; dead_letters counts only your project’s.',
    permission: 'admin.read',
    response: { 200: QueueList },
    handler: async (req) => ({ data: (await admin.queues(req.auth)).map(presentQueue), next_cursor: null }),
  });

  defineRoute(app, {
    method: 'GET',
    url: '/admin/dead-letters',
    summary: 'Messages that exhausted their retries, newest first',
    permission: 'admin.read',
    querystring: DeadLetterQuery,
    response: { 200: Page(DeadLetterSchema) },
    handler: async (req) => toPageBody(await admin.deadLetters(req.auth, req.query), presentDeadLetter),
  });

  defineRoute(app, {
    method: 'GET',
    url: '/admin/dead-letters/:id',
    summary: 'One dead letter, its body whole',
    permission: 'admin.read',
    params: IdParams,
    response: { 200: DeadLetterSchema },
    handler: async (req) => presentDeadLetter(await admin.deadLetter(req.auth, req.params.id)),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/admin/dead-letters/:id/replay',
    summary: 'Send a dead letter back to its queue',
    description:
      'The message goes back with the same id (consumers are idempotent) and its attempts start again. One already replayed is a 409: its message went back then, and a death since is a dead letter of its own; `force=true` replays it again.',
    permission: 'admin.write',
    params: IdParams,
    querystring: Type.Object(
      { force: Type.Optional(Type.Boolean({ description: 'Replay a dead letter that was replayed already' })) },
      { additionalProperties: false },
    ),
    response: { 202: Type.Object({ id: Type.String(), queue: Type.String(), replay_count: Type.Integer(), replayed_at: Type.String() }) },
    handler: async (req, reply) => {
      const d = await admin.replay(req.auth, req.params.id, { force: req.query.force === true });
      return reply.code(202).send({ id: d.id, queue: d.queue, replay_count: d.replayCount, replayed_at: (d.replayedAt ?? new Date()).toISOString() });
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/admin/parse-errors',
    summary: 'Provider payloads we could not understand, newest first',
    permission: 'admin.read',
    querystring: ParseErrorQuery,
    response: { 200: Page(ParseErrorSchema) },
    handler: async (req) =>
      toPageBody(await admin.parseErrors(req.auth, { channelId: req.query.channel_id, limit: req.query.limit, cursor: req.query.cursor }), presentParseError),
  });

  defineRoute(app, {
    method: 'GET',
    url: '/admin/parse-errors/:id',
    summary: 'One parse error, its payload whole',
    permission: 'admin.read',
    params: IdParams,
    response: { 200: ParseErrorSchema },
    handler: async (req) => presentParseError(await admin.parseError(req.auth, req.params.id)),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/admin/parse-errors/:id/replay',
    summary: 'Send a parse error’s webhook through the inbound processor again',
    description:
      'For an ack or reaction parked because its message came after its retries, or a payload a newer version reads: the webhook goes back to the raw queue with its envelope and is processed as if it had just arrived (a message already stored is not stored again). One that fails again is parked as a new parse error. One already replayed is a 409 unless `force=true`.',
    permission: 'admin.write',
    params: IdParams,
    querystring: Type.Object(
      { force: Type.Optional(Type.Boolean({ description: 'Replay a parse error that was replayed already' })) },
      { additionalProperties: false },
    ),
    response: { 202: Type.Object({ id: Type.String(), replay_count: Type.Integer(), replayed_at: Type.String() }) },
    problems: { 409: 'Replayed already (use force=true), or being replayed', 422: 'The parse error names no channel, or its channel was deleted', 503: 'The raw queue did not take it; retry' },
    handler: async (req, reply) => {
      const p = await admin.replayParseError(req.auth, req.params.id, { force: req.query.force === true });
      return reply.code(202).send({ id: p.id, replay_count: p.replayCount, replayed_at: (p.replayedAt ?? new Date()).toISOString() });
    },
  });
}
