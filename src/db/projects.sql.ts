// Queries on `projects`. A project's row is its own tenant: the RLS policy compares `id`.
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, type Page } from './keyset.ts';
import type { Role } from '../domain/permissions.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'projects';

export type ProjectRecord = {
  id: string;
  name: string;
  settings: Record<string, unknown>;
  createdBy: string | null;
  createdAt: Date;
  updatedAt: Date;
};

const COLUMNS = 'p.id, p.name, p.settings, p.created_by, p.created_at, p.updated_at';

export function toProject(r: Row): ProjectRecord {
  return {
    id: r.id,
    name: r.name,
    settings: r.settings ?? {},
    createdBy: r.created_by,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

export async function insertProject(
  q: Queryable,
  p: { id: string; name: string; settings?: Record<string, unknown>; createdBy: string | null },
): Promise<ProjectRecord> {
  const r = await q.query(
    `INSERT INTO projects AS p (id, name, settings, created_by) VALUES ($1, $2, $3::jsonb, $4) RETURNING ${COLUMNS}`,
    [p.id, p.name, JSON.stringify(p.settings ?? {}), p.createdBy],
  );
  return toProject(r.rows[0]);
}

export async function findProject(q: Queryable, id: string): Promise<ProjectRecord | undefined> {
  const r = await q.query(`SELECT ${COLUMNS} FROM projects p WHERE p.id = $1`, [id]);
  return r.rows[0] ? toProject(r.rows[0]) : undefined;
}

/** Renames and/or merges keys into settings (a key set to null is removed). */
export async function updateProject(
  q: Queryable,
  id: string,
  patch: { name?: string; settings?: Record<string, unknown> },
): Promise<ProjectRecord | undefined> {
  const r = await q.query(
    `UPDATE projects AS p SET
       name = coalesce($2, p.name),
       settings = CASE WHEN $3::jsonb IS NULL THEN p.settings
                       -- a key set to null is removed; nulls deeper in a value are the value's own
                       ELSE (p.settings || $3::jsonb) - ARRAY(SELECT k FROM jsonb_each($3::jsonb) AS e(k, v) WHERE jsonb_typeof(v) = 'null') END,
       updated_at = now()
     WHERE p.id = $1 RETURNING ${COLUMNS}`,
    [id, patch.name ?? null, patch.settings === undefined ? null : JSON.stringify(patch.settings)],
  );
  return r.rows[0] ? toProject(r.rows[0]) : undefined;
}

export type ProjectWithRole = ProjectRecord & { role: Role };

/**
 * The projects a user belongs to, oldest membership first. Crosses tenants by design (it is how a
 * user finds their projects), so it runs outside a tenant transaction and filters by the user.
 */
export async function listProjectsOfUser(
  q: Queryable,
  userId: string,
  page: { limit?: number; cursor?: string } = {},
): Promise<Page<ProjectWithRole>> {
  const limit = pageSize(page.limit, 200);
  const params: unknown[] = [userId, limit + 1];
  let after = '';
  if (page.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, page.cursor);
    params.push(c.at, c.id);
    after = 'AND (m.created_at, p.id) > ($3::timestamptz, $4::uuid)';
  }
  const r = await q.query(
    `SELECT ${COLUMNS}, m.role, ${exactTime('m.created_at')} AS cursor_at
     FROM project_members m JOIN projects p ON p.id = m.project_id
     WHERE m.user_id = $1 ${after}
     ORDER BY m.created_at, p.id LIMIT $2`,
    params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (x) => ({ at: x.cursor_at, id: x.id }), (x) => ({ ...toProject(x), role: x.role }));
}
