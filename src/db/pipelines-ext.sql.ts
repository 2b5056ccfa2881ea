// Pipelines beyond what a new project needs (pipelines.sql.ts): reading and editing pipelines and
// their statuses, where each contact stands, and the history of its moves.
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, type Page } from './keyset.ts';
import type { PipelineStatusKind, PipelineStatusRecord } from './pipelines.sql.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'pipelines';

export type PipelineView = {
  id: string;
  projectId: string;
  name: string;
  description: string | null;
  /** The project's default pipeline: settings.default_pipeline_id, else the flagged one. */
  isDefault: boolean;
  statuses: PipelineStatusRecord[];
  createdAt: Date;
  updatedAt: Date;
};

// The project's setting names the default; the column is the fallback for projects without one.
const IS_DEFAULT = `coalesce(p.id::text = (SELECT pr.settings->>'default_pipeline_id' FROM projects pr WHERE pr.id = p.project_id), p.is_default)`;
const PIPELINE_COLUMNS = `p.id, p.project_id, p.name, p.description, ${IS_DEFAULT} AS is_default, p.created_at, p.updated_at,
  coalesce((SELECT jsonb_agg(jsonb_build_object('id', s.id, 'name', s.name, 'kind', s.kind, 'position', s.position) ORDER BY s.position, s.created_at)
            FROM pipeline_statuses s WHERE s.pipeline_id = p.id), '[]'::jsonb) AS statuses`;

function toPipeline(r: Row): PipelineView {
  return {
    id: r.id,
    projectId: r.project_id,
    name: r.name,
    description: r.description,
    isDefault: r.is_default === true,
    statuses: (r.statuses as Array<Record<string, any>>).map((s) => ({ id: s.id, pipelineId: r.id, name: s.name, kind: s.kind, position: s.position })),
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

export async function findPipeline(q: Queryable, projectId: string, id: string): Promise<PipelineView | undefined> {
  const r = await q.query(`SELECT ${PIPELINE_COLUMNS} FROM pipelines p WHERE p.project_id = $1 AND p.id = $2`, [projectId, id]);
  return r.rows[0] ? toPipeline(r.rows[0]) : undefined;
}

/** Oldest first (a project's pipelines are few and read in the order they were made). */
export async function listPipelines(q: Queryable, query: { projectId: string; limit?: number; cursor?: string }): Promise<Page<PipelineView>> {
  const params: unknown[] = [query.projectId];
  let after = '';
  if (query.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, query.cursor);
    params.push(c.at, c.id);
    after = 'AND (p.created_at, p.id) > ($2::timestamptz, $3::uuid)';
  }
  const limit = pageSize(query.limit);
  params.push(limit + 1);
  const r = await q.query(
    `SELECT ${PIPELINE_COLUMNS}, ${exactTime('p.created_at')} AS k_at FROM pipelines p
     WHERE p.project_id = $1 ${after} ORDER BY p.created_at, p.id LIMIT $${params.length}`,
    params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (row) => ({ at: row.k_at, id: row.id }), toPipeline);
}

export async function lockPipeline(tx: Queryable, projectId: string, id: string): Promise<boolean> {
  const r = await tx.query('SELECT 1 FROM pipelines WHERE project_id = $1 AND id = $2 FOR UPDATE', [projectId, id]);
  return r.rows.length > 0;
}

export async function updatePipeline(tx: Queryable, projectId: string, id: string, ch: { name?: string; description?: string | null }): Promise<void> {
  await tx.query(
    `UPDATE pipelines SET name = coalesce($3, name), description = CASE WHEN $4::boolean THEN $5 ELSE description END, updated_at = now()
     WHERE project_id = $1 AND id = $2`,
    [projectId, id, ch.name ?? null, ch.description !== undefined, ch.description ?? null],
  );
}

/**
 * Locks the project's row: a transaction that may change which pipeline is the default takes it
 * before any pipeline row, so two at once take turns (each would otherwise clear the flag it
 * saw and set its own: two defaults, refused by the unique index, a 500).
 */
export async function lockProjectDefaults(tx: Queryable, projectId: string): Promise<void> {
  // NO KEY: rows that merely reference the project (keys, members) need not wait for it.
  await tx.query('SELECT 1 FROM projects WHERE id = $1 FOR NO KEY UPDATE', [projectId]);
}

/** Makes this pipeline the project's default: the setting and the flag move together. The caller holds lockProjectDefaults. */
export async function makeDefaultPipeline(tx: Queryable, projectId: string, id: string): Promise<void> {
  await tx.query('UPDATE pipelines SET is_default = false, updated_at = now() WHERE project_id = $1 AND is_default AND id <> $2', [projectId, id]);
  await tx.query('UPDATE pipelines SET is_default = true, updated_at = now() WHERE project_id = $1 AND id = $2', [projectId, id]);
  await tx.query(
    `UPDATE projects SET settings = settings || jsonb_build_object('default_pipeline_id', $2::text), updated_at = now() WHERE id = $1`,
    [projectId, id],
  );
}

/** The pipelines that read as the project's default (one, or none). */
export async function defaultPipelineIds(q: Queryable, projectId: string): Promise<string[]> {
  const r = await q.query<{ id: string }>(`SELECT p.id FROM pipelines p WHERE p.project_id = $1 AND ${IS_DEFAULT}`, [projectId]);
  return r.rows.map((row) => row.id);
}

/**
 * Inserts a status at `position` (0-based; past the end or absent: last), shifting the later ones
 * down. The pipeline row must be locked by the caller so concurrent inserts do not interleave.
 */
export async function insertStatusAt(
  tx: Queryable,
  s: { id: string; projectId: string; pipelineId: string; name: string; kind: PipelineStatusKind; position?: number },
): Promise<void> {
  const r = await tx.query<{ n: number }>('SELECT count(*)::int AS n FROM pipeline_statuses WHERE pipeline_id = $1', [s.pipelineId]);
  const count = Number(r.rows[0].n);
  const position = Math.min(s.position ?? count, count);
  await tx.query('UPDATE pipeline_statuses SET position = position + 1 WHERE pipeline_id = $1 AND position >= $2', [s.pipelineId, position]);
  await tx.query(
    `INSERT INTO pipeline_statuses (id, pipeline_id, project_id, name, kind, position) VALUES ($1, $2, $3, $4, $5, $6)`,
    [s.id, s.pipelineId, s.projectId, s.name, s.kind, position],
  );
  await tx.query('UPDATE pipelines SET updated_at = now() WHERE id = $1', [s.pipelineId]);
}

export type StatusRef = { id: string; pipelineId: string; name: string; kind: PipelineStatusKind; position: number };

/** A status of this pipeline of this project, or undefined (another pipeline's status included). */
export async function findStatus(q: Queryable, projectId: string, pipelineId: string, statusId: string): Promise<StatusRef | undefined> {
  const r = await q.query(
    `SELECT id, pipeline_id, name, kind, position FROM pipeline_statuses WHERE project_id = $1 AND pipeline_id = $2 AND id = $3`,
    [projectId, pipelineId, statusId],
  );
  const row = r.rows[0];
  return row ? { id: row.id, pipelineId: row.pipeline_id, name: row.name, kind: row.kind, position: row.position } : undefined;
}

/** The first status (lowest position) of the project's default pipeline, when it has one. */
export async function defaultEntryStatus(q: Queryable, projectId: string): Promise<StatusRef | undefined> {
  const r = await q.query(
    `SELECT s.id, s.pipeline_id, s.name, s.kind, s.position
     FROM pipelines p JOIN pipeline_statuses s ON s.pipeline_id = p.id
     WHERE p.project_id = $1 AND ${IS_DEFAULT}
     ORDER BY s.position, s.created_at LIMIT 1`,
    [projectId],
  );
  const row = r.rows[0];
  return row ? { id: row.id, pipelineId: row.pipeline_id, name: row.name, kind: row.kind, position: row.position } : undefined;
}

/** The project's setting that lets new contacts enter the default pipeline on their own. */
export async function autoEnterEnabled(q: Queryable, projectId: string): Promise<boolean> {
  const r = await q.query(`SELECT settings->'pipeline_auto_enter' = 'true'::jsonb AS on FROM projects WHERE id = $1`, [projectId]);
  return r.rows[0]?.on === true;
}

export async function contactExists(q: Queryable, projectId: string, contactId: string): Promise<boolean> {
  const r = await q.query('SELECT 1 FROM contacts WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL', [projectId, contactId]);
  return r.rows.length > 0;
}

/** Locks the contact's place in the pipeline (or its absence, via the contact row) for a move. */
export async function lockContactPlace(
  tx: Queryable,
  projectId: string,
  contactId: string,
  pipelineId: string,
): Promise<{ exists: boolean; current: { id: string; name: string } | null }> {
  const c = await tx.query('SELECT 1 FROM contacts WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL FOR UPDATE', [projectId, contactId]);
  if (c.rows.length === 0) return { exists: false, current: null };
  const r = await tx.query(
    `SELECT s.id, s.name FROM contact_pipeline_statuses c JOIN pipeline_statuses s ON s.id = c.status_id
     WHERE c.contact_id = $1 AND c.pipeline_id = $2`,
    [contactId, pipelineId],
  );
  return { exists: true, current: r.rows[0] ? { id: r.rows[0].id, name: r.rows[0].name } : null };
}

export type Move = {
  id: string;
  projectId: string;
  contactId: string;
  pipelineId: string;
  fromStatusId: string | null;
  toStatusId: string;
  notes: string | null;
  changedByType: 'user' | 'api_key' | 'system';
  changedById: string | null;
};

/** Records a move: the contact's place now, and a history row. Returns when it was made. */
export async function recordMove(tx: Queryable, m: Move): Promise<Date> {
  const r = await tx.query(
    // The time the move is made, with the contact locked (not the transaction's start, now()):
    // moves of one contact then carry times in the order they were made.
    `INSERT INTO contact_pipeline_history (id, project_id, contact_id, pipeline_id, from_status_id, to_status_id, notes, changed_by_type, changed_by_id, changed_at)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, clock_timestamp()) RETURNING changed_at`,
    [m.id, m.projectId, m.contactId, m.pipelineId, m.fromStatusId, m.toStatusId, m.notes, m.changedByType, m.changedById],
  );
  const at = new Date(r.rows[0].changed_at);
  await tx.query(
    `INSERT INTO contact_pipeline_statuses (project_id, contact_id, pipeline_id, status_id, changed_at) VALUES ($1, $2, $3, $4, $5)
     ON CONFLICT (contact_id, pipeline_id) DO UPDATE SET status_id = EXCLUDED.status_id, changed_at = EXCLUDED.changed_at`,
    [m.projectId, m.contactId, m.pipelineId, m.toStatusId, at],
  );
  return at;
}

export type HistoryEntry = Move & { seq: number; changedAt: Date; fromStatusName: string | null; toStatusName: string };

/**
 * A contact's moves in the order they were made, after the move `afterId` (of the same contact),
 * optionally in one pipeline. The order is `seq`, one numbering for every project, so pages are
 * marked by a move's id: a cursor carrying `seq` would tell how many moves other projects made.
 */
/** Whether `id` is a move of this contact (a history cursor names one). */
export async function isMoveOf(q: Queryable, projectId: string, contactId: string, id: string): Promise<boolean> {
  const r = await q.query('SELECT 1 FROM contact_pipeline_history WHERE id = $1 AND project_id = $2 AND contact_id = $3', [id, projectId, contactId]);
  return r.rows.length > 0;
}

export async function listMoves(
  q: Queryable,
  query: { projectId: string; contactId: string; pipelineId?: string; afterId?: string; limit?: number },
): Promise<{ rows: HistoryEntry[]; more: boolean }> {
  const limit = pageSize(query.limit);
  const r = await q.query(
    `SELECT h.*, f.name AS from_name, t.name AS to_name FROM contact_pipeline_history h
     LEFT JOIN pipeline_statuses f ON f.id = h.from_status_id
     JOIN pipeline_statuses t ON t.id = h.to_status_id
     WHERE h.project_id = $1 AND h.contact_id = $2 AND ($3::uuid IS NULL OR h.pipeline_id = $3::uuid)
       AND ($4::uuid IS NULL OR h.seq > (SELECT a.seq FROM contact_pipeline_history a WHERE a.id = $4::uuid AND a.project_id = $1 AND a.contact_id = $2))
     ORDER BY h.seq LIMIT $5`,
    [query.projectId, query.contactId, query.pipelineId ?? null, query.afterId ?? null, limit + 1],
  );
  const rows = r.rows.slice(0, limit).map((row) => ({
    id: row.id,
    seq: Number(row.seq),
    projectId: row.project_id,
    contactId: row.contact_id,
    pipelineId: row.pipeline_id,
    fromStatusId: row.from_status_id,
    toStatusId: row.to_status_id,
    fromStatusName: row.from_name,
    toStatusName: row.to_name,
    notes: row.notes,
    changedByType: row.changed_by_type,
    changedById: row.changed_by_id,
    changedAt: new Date(row.changed_at),
  }));
  return { rows, more: r.rows.length > limit };
}
