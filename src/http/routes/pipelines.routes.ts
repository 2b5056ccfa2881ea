// /pipelines and a contact's place in them: pipelines with ordered statuses (open, active, closed
// kinds), moving a contact to a status (PUT /contacts/{id}/pipeline-status) and the history of moves.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from '../app.ts';
import type { HistoryEntry, PipelineView } from '../../db/pipelines-ext.sql.ts';
import { invalid } from '../../errors.ts';
import { makePipelinesService, type MoveResult } from '../../services/pipelines.service.ts';
import { IdParams, ListQuery, NOT_BLANK, Nullable, Page, Timestamp, Uuid, iso, isoOrNull, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';

const Kind = Type.Unsafe<'open' | 'active' | 'closed'>({ type: 'string', enum: ['open', 'active', 'closed'], description: 'open: not started; active: in progress; closed: done (won, lost…)' });
const Name = Type.String({ minLength: 1, maxLength: 200, pattern: NOT_BLANK });

const Status = Type.Object({ id: Uuid, name: Type.String(), kind: Kind, position: Type.Integer({ description: '0-based order in the pipeline' }) });

const Pipeline = Type.Object(
  {
    id: Uuid,
    name: Type.String(),
    description: Nullable(Type.String()),
    is_default: Type.Boolean({ description: "The project's default pipeline (settings.default_pipeline_id)" }),
    statuses: Type.Array(Status),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Pipeline' },
);

const CreateBody = Type.Object(
  {
    name: Name,
    description: Type.Optional(Nullable(Type.String({ maxLength: 2000 }))),
    statuses: Type.Array(Type.Object({ name: Name, kind: Kind }, { additionalProperties: false }), { minItems: 1, maxItems: 50, description: 'In order' }),
    is_default: Type.Optional(Type.Boolean({ description: "Make it the project's default pipeline" })),
  },
  { additionalProperties: false },
);

const UpdateBody = Type.Object(
  {
    name: Type.Optional(Name),
    description: Type.Optional(Nullable(Type.String({ maxLength: 2000 }))),
    is_default: Type.Optional(Type.Boolean({ description: 'true makes it the default (the previous default stops being one)' })),
  },
  { additionalProperties: false, minProperties: 1 },
);

const StatusBody = Type.Object(
  { name: Name, kind: Kind, position: Type.Optional(Type.Integer({ minimum: 0, description: 'Where to insert it (0-based); default: last' })) },
  { additionalProperties: false },
);

const MoveBody = Type.Object(
  { pipeline_id: Uuid, status_id: Uuid, notes: Type.Optional(Nullable(Type.String({ maxLength: 4000 }))) },
  { additionalProperties: false },
);

const moveFields = {
  contact_id: Uuid,
  pipeline_id: Uuid,
  status_id: Uuid,
  status_name: Type.String(),
  previous_status_id: Nullable(Uuid),
  previous_status_name: Nullable(Type.String()),
  notes: Nullable(Type.String()),
  changed_by: Nullable(Type.String({ description: 'The user or API key id (or the system consumer) that made the move' })),
  changed_by_type: Type.Unsafe<'user' | 'api_key' | 'system'>({ type: 'string', enum: ['user', 'api_key', 'system'] }),
};
const Move = Type.Object(
  { ...moveFields, changed: Type.Boolean({ description: 'false: the contact already stood there; nothing was recorded' }), changed_at: Nullable(Timestamp) },
  { title: 'PipelineMove' },
);
const HistoryItem = Type.Object({ id: Uuid, ...moveFields, changed_at: Timestamp }, { title: 'PipelineHistoryEntry' });

const HistoryQuery = ListQuery({ pipeline_id: Type.Optional(Uuid) });

function presentPipeline(p: PipelineView) {
  return {
    id: p.id,
    name: p.name,
    description: p.description,
    is_default: p.isDefault,
    statuses: p.statuses.map((s) => ({ id: s.id, name: s.name, kind: s.kind, position: s.position })),
    created_at: iso(p.createdAt),
    updated_at: iso(p.updatedAt),
  };
}

function presentMove(m: MoveResult) {
  return {
    contact_id: m.contactId,
    pipeline_id: m.pipelineId,
    status_id: m.status.id,
    status_name: m.status.name,
    previous_status_id: m.changed ? (m.previous?.id ?? null) : null,
    previous_status_name: m.changed ? (m.previous?.name ?? null) : null,
    notes: m.notes,
    changed_by: m.actor.id,
    changed_by_type: m.actor.type,
    changed: m.changed,
    changed_at: isoOrNull(m.changedAt),
  };
}

function presentEntry(h: HistoryEntry) {
  return {
    id: h.id,
    contact_id: h.contactId,
    pipeline_id: h.pipelineId,
    status_id: h.toStatusId,
    status_name: h.toStatusName,
    previous_status_id: h.fromStatusId,
    previous_status_name: h.fromStatusName,
    notes: h.notes,
    changed_by: h.changedById,
    changed_by_type: h.changedByType,
    changed_at: iso(h.changedAt),
  };
}

// History pages are in move order; the cursor names the last move seen (not its place in the
// numbering every project shares: see listMoves).
const moveCursor = (id: string) => Buffer.from(`h:${id}`).toString('base64url');
function afterMove(cursor: string | undefined): string | undefined {
  if (cursor === undefined) return undefined;
  const m = /^h:([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})$/.exec(Buffer.from(cursor, 'base64url').toString('utf8'));
  if (!m) throw invalid('cursor is not valid', [{ field: 'cursor', message: 'use next_cursor from a previous page of the same list' }]);
  return m[1];
}

export async function pipelinesRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const pipelines = makePipelinesService({ db: deps.db });

  defineRoute(app, {
    method: 'GET',
    url: '/pipelines',
    summary: 'List pipelines, oldest first',
    permission: 'pipelines.read',
    querystring: ListQuery(),
    response: { 200: Page(Pipeline) },
    handler: async (req) => toPageBody(await pipelines.list(req.auth.projectId, req.query), presentPipeline),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/pipelines',
    summary: 'Create a pipeline with its statuses',
    description: 'Emits pipeline.created; with is_default, also pipeline.updated for the pipeline that was the default.',
    permission: 'pipelines.manage',
    idempotent: true,
    body: CreateBody,
    response: { 201: Pipeline },
    handler: async (req, reply) => {
      const b = req.body;
      const p = await pipelines.create(req.auth.projectId, { name: b.name, description: b.description, statuses: b.statuses, isDefault: b.is_default });
      return reply.code(201).header('location', `/api/v1/pipelines/${p.id}`).send(presentPipeline(p));
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/pipelines/:id',
    summary: 'Get a pipeline with its statuses',
    permission: 'pipelines.read',
    params: IdParams,
    response: { 200: Pipeline },
    handler: async (req) => presentPipeline(await pipelines.get(req.auth.projectId, req.params.id)),
  });

  defineRoute(app, {
    method: 'PATCH',
    url: '/pipelines/:id',
    summary: 'Rename a pipeline, describe it, or make it the default',
    description: 'Emits pipeline.updated when something changed (and for the pipeline that stops being the default). Making the default pipeline the default again changes nothing; is_default false on the default is a 400.',
    permission: 'pipelines.manage',
    params: IdParams,
    body: UpdateBody,
    response: { 200: Pipeline },
    handler: async (req) => {
      const b = req.body;
      return presentPipeline(await pipelines.update(req.auth.projectId, req.params.id, { name: b.name, description: b.description, isDefault: b.is_default }));
    },
  });

  defineRoute(app, {
    method: 'POST',
    url: '/pipelines/:id/statuses',
    summary: 'Add a status to a pipeline',
    description: 'Emits pipeline.updated with the statuses as they are now.',
    permission: 'pipelines.manage',
    params: IdParams,
    body: StatusBody,
    response: { 201: Pipeline },
    handler: async (req, reply) => reply.code(201).send(presentPipeline(await pipelines.addStatus(req.auth.projectId, req.params.id, req.body))),
  });

  defineRoute(app, {
    method: 'PUT',
    url: '/contacts/:id/pipeline-status',
    summary: "Move a contact to a status of a pipeline",
    description: 'Records the move (who, when, notes) in the history and emits contact.status_changed. Moving a contact to where it already stands changes nothing.',
    tags: ['contacts', 'pipelines'],
    permission: 'contacts.write',
    params: IdParams,
    body: MoveBody,
    response: { 200: Move },
    problems: { 422: 'status_id is not a status of pipeline_id' },
    handler: async (req) => {
      const b = req.body;
      return presentMove(await pipelines.moveContact(req.auth, req.params.id, { pipelineId: b.pipeline_id, statusId: b.status_id, notes: b.notes }));
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/contacts/:id/pipeline-history',
    summary: "A contact's pipeline moves, in the order they were made",
    tags: ['contacts', 'pipelines'],
    permission: 'contacts.read',
    params: IdParams,
    querystring: HistoryQuery,
    response: { 200: Page(HistoryItem) },
    handler: async (req) => {
      const { pipeline_id, limit, cursor } = req.query;
      const page = await pipelines.history(req.auth.projectId, req.params.id, { pipelineId: pipeline_id, limit, afterId: afterMove(cursor) });
      const last = page.rows[page.rows.length - 1];
      return { data: page.rows.map(presentEntry), next_cursor: page.more && last ? moveCursor(last.id) : null };
    },
  });
}
