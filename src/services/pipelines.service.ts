// Pipelines: ordered statuses a contact moves through (a sales funnel, a support queue), and the
// moves themselves — where a contact stands in each pipeline, and the history of who moved it when.
// Every change commits with its event (pipeline.created, pipeline.updated, contact.status_changed).
import type { Database, Queryable } from '../db/database.ts';
import { pageOf, type Page } from '../db/keyset.ts';
import { insertPipeline, insertPipelineStatuses, type PipelineStatusKind } from '../db/pipelines.sql.ts';
import {
  contactExists, defaultEntryStatus, defaultPipelineIds, findPipeline, findStatus, insertStatusAt, listMoves, listPipelines, isMoveOf, lockContactPlace, lockPipeline,
  lockProjectDefaults, makeDefaultPipeline, recordMove, updatePipeline, type HistoryEntry, type PipelineView, type StatusRef,
} from '../db/pipelines-ext.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { newEvent, type EventEnvelope } from '../domain/events.ts';
import { uuidv7 } from '../domain/ids.ts';
import type { Caller } from '../domain/permissions.ts';
import { AppError, invalid, notFound } from '../errors.ts';
import { contactNotFound } from '../db/contacts-read.sql.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';
import { actorOf } from './session-lifecycle.service.ts';

export type StatusInput = { name: string; kind: PipelineStatusKind };
export type CreatePipelineInput = { name: string; description?: string | null; statuses: StatusInput[]; isDefault?: boolean };
export type Actor = { type: 'user' | 'api_key' | 'system'; id: string | null };

export type MoveResult = {
  contactId: string;
  pipelineId: string;
  status: StatusRef;
  previous: { id: string; name: string } | null;
  notes: string | null;
  actor: Actor;
  changedAt: Date | null;
  /** False when the contact already stood there: nothing recorded, no event. */
  changed: boolean;
};

const MAX_STATUSES = 50;

function checkStatuses(statuses: readonly StatusInput[], field = 'statuses'): void {
  if (statuses.length === 0) throw invalid('a pipeline needs at least one status', [{ field, message: 'empty' }]);
  if (statuses.length > MAX_STATUSES) throw invalid(`a pipeline has at most ${MAX_STATUSES} statuses`, [{ field, message: 'too many' }]);
  const seen = new Set<string>();
  statuses.forEach((s, i) => {
    const key = s.name.trim().toLowerCase();
    if (seen.has(key)) throw invalid(`status names must differ within a pipeline ("${s.name}" twice)`, [{ field: `${field}.${i}.name`, message: 'duplicate' }]);
    seen.add(key);
  });
}

/**
 * Moves a contact to `status` (already checked to be of `status.pipelineId` in this project), in
 * the caller's tenant transaction, and appends contact.status_changed. A move to where the
 * contact already stands changes nothing.
 */
export async function moveContactTx(
  tx: Queryable,
  m: { projectId: string; contactId: string; status: StatusRef; notes: string | null; actor: Actor; onlyIfOutside?: boolean },
): Promise<MoveResult | undefined> {
  const place = await lockContactPlace(tx, m.projectId, m.contactId, m.status.pipelineId);
  if (!place.exists) return undefined;
  const base = { contactId: m.contactId, pipelineId: m.status.pipelineId, status: m.status, previous: place.current, notes: m.notes, actor: m.actor };
  if (place.current?.id === m.status.id || (m.onlyIfOutside && place.current)) return { ...base, changedAt: null, changed: false };
  const at = await recordMove(tx, {
    id: uuidv7(),
    projectId: m.projectId,
    contactId: m.contactId,
    pipelineId: m.status.pipelineId,
    fromStatusId: place.current?.id ?? null,
    toStatusId: m.status.id,
    notes: m.notes,
    changedByType: m.actor.type,
    changedById: m.actor.id,
  });
  await appendEvents(tx, [
    newEvent('contact.status_changed', {
      projectId: m.projectId,
      aggregateId: m.contactId,
      occurredAt: at,
      data: {
        contact_id: m.contactId,
        pipeline_id: m.status.pipelineId,
        status_id: m.status.id,
        status_name: m.status.name,
        previous_status_id: place.current?.id ?? null,
        previous_status_name: place.current?.name ?? null,
        notes: m.notes,
        changed_by: m.actor.id,
        changed_by_type: m.actor.type,
        changed_at: at.toISOString(),
      },
    }),
  ]);
  return { ...base, changedAt: at, changed: true };
}

/**
 * The pipeline-entry reaction to contact.created: the contact enters the first status of the
 * project's default pipeline, unless it already stands somewhere in that pipeline (a person was
 * quicker) or the project has no default pipeline.
 */
export async function enterDefaultPipelineTx(tx: Queryable, projectId: string, contactId: string): Promise<MoveResult | undefined> {
  const status = await defaultEntryStatus(tx, projectId);
  if (!status) return undefined;
  return moveContactTx(tx, { projectId, contactId, status, notes: null, actor: { type: 'system', id: 'pipeline-entry' }, onlyIfOutside: true });
}

/**
 * Makes `id` the default (the setting and the flag, even when the setting already named it: they
 * may have drifted apart) and returns the pipeline.updated events of the pipelines that read as
 * the default before and no longer. The caller holds lockProjectDefaults.
 */
async function moveDefault(tx: Queryable, projectId: string, id: string): Promise<EventEnvelope[]> {
  const was = await defaultPipelineIds(tx, projectId);
  await makeDefaultPipeline(tx, projectId, id);
  const events: EventEnvelope[] = [];
  for (const other of was) {
    if (other !== id) events.push(pipelineUpdated((await findPipeline(tx, projectId, other))!, ['is_default']));
  }
  return events;
}

/**
 * Makes `id` (a pipeline of the project) the default, in the caller's transaction, with the events:
 * `PATCH /projects` with `settings.default_pipeline_id` comes this way, as `PATCH /pipelines` does.
 */
export async function makeDefaultPipelineTx(tx: Queryable, projectId: string, id: string): Promise<void> {
  await lockProjectDefaults(tx, projectId);
  const before = await findPipeline(tx, projectId, id);
  if (!before) throw notFound('pipeline');
  const unmade = await moveDefault(tx, projectId, id);
  const made = before.isDefault ? [] : [pipelineUpdated((await findPipeline(tx, projectId, id))!, ['is_default'])];
  await appendEvents(tx, [...made, ...unmade]);
}

/** pipeline.updated: the whole pipeline as it is now, and what the change touched. */
function pipelineUpdated(p: PipelineView, changed: string[]) {
  return newEvent('pipeline.updated', {
    projectId: p.projectId,
    aggregateId: p.id,
    data: {
      pipeline_id: p.id,
      name: p.name,
      description: p.description,
      is_default: p.isDefault,
      statuses: p.statuses.map((s) => ({ status_id: s.id, name: s.name, kind: s.kind, position: s.position })),
      changed,
    },
  });
}

export type PipelinesService = ReturnType<typeof makePipelinesService>;

export function makePipelinesService(deps: { db: Database }) {
  const { db } = deps;
  const tenant = <T>(projectId: string, fn: (tx: Queryable) => Promise<T>) => withTransaction(db, fn, { projectId });

  async function reload(tx: Queryable, projectId: string, id: string): Promise<PipelineView> {
    const p = await findPipeline(tx, projectId, id);
    if (!p) throw notFound('pipeline');
    return p;
  }

  return {
    list(projectId: string, query: { limit?: number; cursor?: string }): Promise<Page<PipelineView>> {
      return tenant(projectId, (tx) => listPipelines(tx, { ...pageOf(query), projectId }));
    },

    get(projectId: string, id: string): Promise<PipelineView> {
      return tenant(projectId, (tx) => reload(tx, projectId, id));
    },

    create(projectId: string, input: CreatePipelineInput): Promise<PipelineView> {
      checkStatuses(input.statuses);
      return tenant(projectId, async (tx) => {
        if (input.isDefault) await lockProjectDefaults(tx, projectId);
        const id = uuidv7();
        await insertPipeline(tx, { id, projectId, name: input.name.trim(), isDefault: false });
        if (input.description != null) await updatePipeline(tx, projectId, id, { description: input.description });
        const statuses = input.statuses.map((s, position) => ({ id: uuidv7(), pipelineId: id, name: s.name.trim(), kind: s.kind, position }));
        await insertPipelineStatuses(tx, projectId, statuses);
        const unmade = input.isDefault ? await moveDefault(tx, projectId, id) : [];
        await appendEvents(tx, [
          newEvent('pipeline.created', {
            projectId,
            aggregateId: id,
            data: { pipeline_id: id, name: input.name.trim(), statuses: statuses.map((s) => ({ status_id: s.id, name: s.name, position: s.position })) },
          }),
          ...unmade, // the pipeline that was the default is no longer
        ]);
        return reload(tx, projectId, id);
      });
    },

    update(projectId: string, id: string, patch: { name?: string; description?: string | null; isDefault?: boolean }): Promise<PipelineView> {
      return tenant(projectId, async (tx) => {
        if (patch.isDefault) await lockProjectDefaults(tx, projectId); // before any pipeline row
        if (!(await lockPipeline(tx, projectId, id))) throw notFound('pipeline');
        const before = await reload(tx, projectId, id);
        if (patch.isDefault === false && before.isDefault) {
          throw invalid('a project always has a default pipeline; make another one the default instead', [{ field: 'is_default', message: 'cannot unset' }]);
        }
        if (patch.name !== undefined || patch.description !== undefined) {
          await updatePipeline(tx, projectId, id, { name: patch.name?.trim(), description: patch.description });
        }
        const unmade = patch.isDefault ? await moveDefault(tx, projectId, id) : [];
        const after = await reload(tx, projectId, id);
        const changed = (['name', 'description', 'isDefault'] as const).filter((k) => before[k] !== after[k]).map((k) => (k === 'isDefault' ? 'is_default' : k));
        // The pipeline that was the default is no longer: its subscribers hear it too.
        await appendEvents(tx, [...(changed.length ? [pipelineUpdated(after, changed)] : []), ...unmade]);
        return after;
      });
    },

    addStatus(projectId: string, pipelineId: string, s: StatusInput & { position?: number }): Promise<PipelineView> {
      return tenant(projectId, async (tx) => {
        if (!(await lockPipeline(tx, projectId, pipelineId))) throw notFound('pipeline');
        const current = await reload(tx, projectId, pipelineId);
        checkStatuses([...current.statuses, s], 'name');
        await insertStatusAt(tx, { id: uuidv7(), projectId, pipelineId, name: s.name.trim(), kind: s.kind, position: s.position });
        const after = await reload(tx, projectId, pipelineId);
        await appendEvents(tx, [pipelineUpdated(after, ['statuses'])]);
        return after;
      });
    },

    /** PUT /contacts/{id}/pipeline-status: the contact must be the project's, the status its pipeline's. */
    moveContact(caller: Caller, contactId: string, input: { pipelineId: string; statusId: string; notes?: string | null }): Promise<MoveResult> {
      const projectId = caller.projectId;
      return tenant(projectId, async (tx) => {
        const status = await findStatus(tx, projectId, input.pipelineId, input.statusId);
        if (!status) {
          // The contact decides 404 first: another project's contact must not learn anything else.
          if (!(await lockContactPlace(tx, projectId, contactId, input.pipelineId)).exists) throw await contactNotFound(tx, projectId, contactId);
          if (!(await findPipeline(tx, projectId, input.pipelineId))) throw notFound('pipeline');
          throw new AppError('unprocessable', 'status_id is not a status of this pipeline', [{ field: 'status_id', message: 'not in pipeline_id' }]);
        }
        const { type, id } = actorOf(caller);
        const moved = await moveContactTx(tx, { projectId, contactId, status, notes: input.notes?.trim() || null, actor: { type, id } });
        if (!moved) throw await contactNotFound(tx, projectId, contactId);
        return moved;
      });
    },

    /** A contact's moves in the order they were made. */
    history(projectId: string, contactId: string, query: { pipelineId?: string; afterId?: string; limit?: number }): Promise<{ rows: HistoryEntry[]; more: boolean }> {
      return tenant(projectId, async (tx) => {
        if (!(await contactExists(tx, projectId, contactId))) throw await contactNotFound(tx, projectId, contactId);
        // A cursor naming no move of this contact (another contact's list, made up) would give an
        // empty page, read as the end of the history.
        if (query.afterId !== undefined && !(await isMoveOf(tx, projectId, contactId, query.afterId))) {
          throw invalid('cursor is not valid', [{ field: 'cursor', message: 'use next_cursor from a previous page of the same list' }]);
        }
        return listMoves(tx, { pipelineId: query.pipelineId, afterId: query.afterId, limit: query.limit, projectId, contactId });
      });
    },
  };
}
