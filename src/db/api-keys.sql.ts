// Queries on `api_keys`. Keys are stored as a SHA-256 hash; listings show the prefix only.
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, type Page } from './keyset.ts';
import type { Role } from '../domain/permissions.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'api-keys';

export type ApiKeyRecord = {
  id: string;
  projectId: string;
  name: string;
  role: Role;
  prefix: string;
  /** The user who created the key (signed in), or null: made with an API key, or the user is gone. */
  createdBy: string | null;
  /** The API key that created this one, or null when a signed-in user (or registration) did. */
  createdByKeyId: string | null;
  createdAt: Date;
  lastUsedAt: Date | null;
  revokedAt: Date | null;
};

const COLUMNS = 'id, project_id, name, role, prefix, created_by, created_by_key_id, created_at, last_used_at, revoked_at';

const date = (v: unknown): Date | null => (v === null || v === undefined ? null : new Date(v as string));

function toApiKey(r: Row): ApiKeyRecord {
  return {
    id: r.id,
    projectId: r.project_id,
    name: r.name,
    role: r.role,
    prefix: r.prefix,
    createdBy: r.created_by,
    createdByKeyId: r.created_by_key_id,
    createdAt: new Date(r.created_at),
    lastUsedAt: date(r.last_used_at),
    revokedAt: date(r.revoked_at),
  };
}

export async function insertApiKey(
  q: Queryable,
  k: { id: string; projectId: string; name: string; role: Role; prefix: string; hash: string; createdBy: string | null; createdByKeyId: string | null },
): Promise<ApiKeyRecord> {
  const r = await q.query(
    `INSERT INTO api_keys (id, project_id, name, role, prefix, hash, created_by, created_by_key_id)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING ${COLUMNS}`,
    [k.id, k.projectId, k.name, k.role, k.prefix, k.hash, k.createdBy, k.createdByKeyId],
  );
  return toApiKey(r.rows[0]);
}

export async function findApiKey(q: Queryable, projectId: string, id: string): Promise<ApiKeyRecord | undefined> {
  const r = await q.query(`SELECT ${COLUMNS} FROM api_keys WHERE project_id = $1 AND id = $2`, [projectId, id]);
  return r.rows[0] ? toApiKey(r.rows[0]) : undefined;
}

/** The project's keys that still work, newest first. */
export async function listApiKeys(q: Queryable, projectId: string, page: { limit?: number; cursor?: string }): Promise<Page<ApiKeyRecord>> {
  const limit = pageSize(page.limit);
  const params: unknown[] = [projectId, limit + 1];
  let after = '';
  if (page.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, page.cursor);
    params.push(c.at, c.id);
    after = 'AND (created_at, id) < ($3::timestamptz, $4::uuid)';
  }
  const r = await q.query(
    `SELECT ${COLUMNS}, ${exactTime('created_at')} AS cursor_at FROM api_keys
     WHERE project_id = $1 AND revoked_at IS NULL ${after}
     ORDER BY created_at DESC, id DESC LIMIT $2`,
    params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (x) => ({ at: x.cursor_at, id: x.id }), toApiKey);
}

/** Revokes a key of the project (idempotent). Undefined when the project has no such key. */
export async function revokeApiKey(q: Queryable, projectId: string, id: string): Promise<ApiKeyRecord | undefined> {
  const r = await q.query(
    `UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
     WHERE project_id = $1 AND id = $2 RETURNING ${COLUMNS}`,
    [projectId, id],
  );
  return r.rows[0] ? toApiKey(r.rows[0]) : undefined;
}

/**
 * Resolves a presented key (by its hash) to its project and role. A global lookup — it decides
 * the tenant — so it runs outside a tenant transaction. Revoked keys are not found.
 */
export async function findActiveApiKeyByHash(q: Queryable, hash: string): Promise<ApiKeyRecord | undefined> {
  const r = await q.query(`SELECT ${COLUMNS} FROM api_keys WHERE hash = $1 AND revoked_at IS NULL`, [hash]);
  return r.rows[0] ? toApiKey(r.rows[0]) : undefined;
}

/** Records use, at most once a minute per key, so busy keys do not turn every request into a write. */
export async function touchApiKey(q: Queryable, id: string): Promise<void> {
  await q.query(
    `UPDATE api_keys SET last_used_at = now()
     WHERE id = $1 AND (last_used_at IS NULL OR last_used_at < now() - interval '1 minute')`,
    [id],
  );
}
