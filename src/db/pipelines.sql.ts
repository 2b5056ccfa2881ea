// Queries on `pipelines` and `pipeline_statuses` (statuses belong to their pipeline and are only
// ever written with it). Minimal for now: what a new project needs; the pipelines feature extends it.
import type { Queryable, Row } from './database.ts';

export type PipelineStatusKind = 'open' | 'active' | 'closed';
export type PipelineStatusRecord = { id: string; pipelineId: string; name: string; kind: PipelineStatusKind; position: number };
export type PipelineRecord = { id: string; projectId: string; name: string; isDefault: boolean; createdAt: Date };

function toPipeline(r: Row): PipelineRecord {
  return { id: r.id, projectId: r.project_id, name: r.name, isDefault: r.is_default, createdAt: new Date(r.created_at) };
}

export async function insertPipeline(
  q: Queryable,
  p: { id: string; projectId: string; name: string; isDefault: boolean },
): Promise<PipelineRecord> {
  const r = await q.query(
    `INSERT INTO pipelines (id, project_id, name, is_default) VALUES ($1, $2, $3, $4)
     RETURNING id, project_id, name, is_default, created_at`,
    [p.id, p.projectId, p.name, p.isDefault],
  );
  return toPipeline(r.rows[0]);
}

export async function insertPipelineStatuses(
  q: Queryable,
  projectId: string,
  statuses: readonly PipelineStatusRecord[],
): Promise<void> {
  if (statuses.length === 0) return;
  await q.query(
    `INSERT INTO pipeline_statuses (id, pipeline_id, project_id, name, kind, position)
     SELECT id, pipeline_id, $1, name, kind, position
     FROM unnest($2::uuid[], $3::uuid[], $4::text[], $5::text[], $6::int[]) AS s (id, pipeline_id, name, kind, position)`,
    [
      projectId,
      statuses.map((s) => s.id),
      statuses.map((s) => s.pipelineId),
      statuses.map((s) => s.name),
      statuses.map((s) => s.kind),
      statuses.map((s) => s.position),
    ],
  );
}

/** Whether the project has this pipeline (settings may only point at the project's own). */
export async function pipelineExists(q: Queryable, projectId: string, id: string): Promise<boolean> {
  const r = await q.query('SELECT 1 FROM pipelines WHERE project_id = $1 AND id = $2', [projectId, id]);
  return r.rowCount > 0;
}
