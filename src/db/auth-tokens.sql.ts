// Queries on `auth_tokens` (login tokens; global, hashed, expiring, revocable).
import type { Queryable } from './database.ts';

export type AuthTokenRecord = { id: string; userId: string; expiresAt: Date };

export async function insertAuthToken(q: Queryable, t: { id: string; userId: string; hash: string; expiresAt: Date }): Promise<void> {
  await q.query('INSERT INTO auth_tokens (id, user_id, hash, expires_at) VALUES ($1, $2, $3, $4)', [t.id, t.userId, t.hash, t.expiresAt]);
}

/**
 * A login's token, stored only while the user's password hash is still `checked` (the one the
 * login verified); false when it is not. The user's row is share-locked for it, so a password
 * change in progress is waited for and then seen: the login is refused rather than given a token
 * of the old password that the change's revocation, committed meanwhile, did not reach.
 */
export async function insertLoginToken(q: Queryable, t: { id: string; userId: string; hash: string; expiresAt: Date }, checked: string): Promise<boolean> {
  const r = await q.query(
    `INSERT INTO auth_tokens (id, user_id, hash, expires_at)
     SELECT $1, id, $3, $4 FROM users WHERE id = $2 AND password_hash = $5 FOR SHARE`,
    [t.id, t.userId, t.hash, t.expiresAt, checked],
  );
  return r.rowCount > 0;
}

/** The token behind a presented secret's hash, unless it is revoked or expired (database clock). */
export async function findActiveAuthToken(q: Queryable, hash: string): Promise<AuthTokenRecord | undefined> {
  const r = await q.query(
    'SELECT id, user_id, expires_at FROM auth_tokens WHERE hash = $1 AND revoked_at IS NULL AND expires_at > now()',
    [hash],
  );
  const row = r.rows[0];
  return row ? { id: row.id, userId: row.user_id, expiresAt: new Date(row.expires_at) } : undefined;
}

export async function revokeAuthToken(q: Queryable, id: string): Promise<void> {
  await q.query('UPDATE auth_tokens SET revoked_at = coalesce(revoked_at, now()) WHERE id = $1', [id]);
}

/** Revokes every login token of a user still in force ("log out everywhere"); how many it revoked. */
export async function revokeUserTokens(q: Queryable, userId: string): Promise<number> {
  const r = await q.query('UPDATE auth_tokens SET revoked_at = now() WHERE user_id = $1 AND revoked_at IS NULL AND expires_at > now()', [userId]);
  return r.rowCount;
}

/**
 * Deletes up to `limit` tokens expired for more than a day (kept that long only to explain a late
 * 401 in logs); call it again while it returns `limit`. SKIP LOCKED lets several sweepers run.
 */
export async function pruneAuthTokens(q: Queryable, limit: number): Promise<number> {
  const r = await q.query(
    `DELETE FROM auth_tokens WHERE id = ANY(ARRAY(
       SELECT id FROM auth_tokens WHERE expires_at < now() - interval '1 day'
       ORDER BY expires_at LIMIT $1
       FOR UPDATE SKIP LOCKED))`,
    [limit],
  );
  return r.rowCount;
}
