// Queries on `project_members`: who belongs to a project, with which role.
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, type Page } from './keyset.ts';
import type { Role } from '../domain/permissions.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'members';

export type MemberRecord = { projectId: string; userId: string; role: Role; name: string; email: string; createdAt: Date };

function toMember(r: Row): MemberRecord {
  return { projectId: r.project_id, userId: r.user_id, role: r.role, name: r.name, email: r.email, createdAt: new Date(r.created_at) };
}

/** Adds a member or changes their role. `created` tells which. */
export async function upsertMember(
  q: Queryable,
  m: { projectId: string; userId: string; role: Role },
): Promise<{ member: MemberRecord; created: boolean }> {
  const r = await q.query(
    `WITH up AS (
       INSERT INTO project_members (project_id, user_id, role) VALUES ($1, $2, $3)
       ON CONFLICT (project_id, user_id) DO UPDATE SET role = EXCLUDED.role
       RETURNING project_id, user_id, role, created_at, (xmax = 0) AS created)
     SELECT up.*, u.name, u.email FROM up JOIN users u ON u.id = up.user_id`,
    [m.projectId, m.userId, m.role],
  );
  return { member: toMember(r.rows[0]), created: r.rows[0].created === true };
}

/** Whether the person with this (normalised) email is a member of the project. */
export async function isMemberByEmail(q: Queryable, projectId: string, email: string): Promise<boolean> {
  const r = await q.query(
    `SELECT 1 FROM project_members m JOIN users u ON u.id = m.user_id WHERE m.project_id = $1 AND u.email = $2`,
    [projectId, email],
  );
  return r.rows.length > 0;
}

export async function findMember(q: Queryable, projectId: string, userId: string): Promise<MemberRecord | undefined> {
  const r = await q.query(
    `SELECT m.project_id, m.user_id, m.role, m.created_at, u.name, u.email
     FROM project_members m JOIN users u ON u.id = m.user_id WHERE m.project_id = $1 AND m.user_id = $2`,
    [projectId, userId],
  );
  return r.rows[0] ? toMember(r.rows[0]) : undefined;
}

/**
 * The user's role in a project, or in their first project when none is named. A global lookup
 * (it decides which tenant a login token acts in), so it runs outside a tenant transaction.
 */
export async function findMembership(
  q: Queryable,
  userId: string,
  projectId?: string,
): Promise<{ projectId: string; role: Role } | undefined> {
  const r =
    projectId === undefined
      ? await q.query(`SELECT project_id, role FROM project_members WHERE user_id = $1 ORDER BY created_at, project_id LIMIT 1`, [userId])
      : await q.query(`SELECT project_id, role FROM project_members WHERE user_id = $1 AND project_id = $2`, [userId, projectId]);
  return r.rows[0] ? { projectId: r.rows[0].project_id, role: r.rows[0].role } : undefined;
}

export async function listMembers(q: Queryable, projectId: string, page: { limit?: number; cursor?: string }): Promise<Page<MemberRecord>> {
  const limit = pageSize(page.limit);
  const params: unknown[] = [projectId, limit + 1];
  let after = '';
  if (page.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, page.cursor);
    params.push(c.at, c.id);
    after = 'AND (m.created_at, m.user_id) > ($3::timestamptz, $4::uuid)';
  }
  const r = await q.query(
    `SELECT m.project_id, m.user_id, m.role, m.created_at, u.name, u.email, ${exactTime('m.created_at')} AS cursor_at
     FROM project_members m JOIN users u ON u.id = m.user_id
     WHERE m.project_id = $1 ${after} ORDER BY m.created_at, m.user_id LIMIT $2`,
    params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (x) => ({ at: x.cursor_at, id: x.user_id }), toMember);
}

export async function deleteMember(q: Queryable, projectId: string, userId: string): Promise<boolean> {
  const r = await q.query('DELETE FROM project_members WHERE project_id = $1 AND user_id = $2', [projectId, userId]);
  return r.rowCount > 0;
}

/** Admins of the project, locked until the transaction ends so two demotions cannot both pass. */
export async function lockAdmins(q: Queryable, projectId: string): Promise<string[]> {
  const r = await q.query(`SELECT user_id FROM project_members WHERE project_id = $1 AND role = 'admin' FOR UPDATE`, [projectId]);
  return r.rows.map((x) => x.user_id);
}
