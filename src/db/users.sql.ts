// Queries on `users` (a global table: a user may belong to several projects).
import type { Queryable, Row } from './database.ts';

export type UserRecord = { id: string; email: string; name: string; createdAt: Date; updatedAt: Date };
export type UserWithPassword = UserRecord & { passwordHash: string };

const COLUMNS = 'id, email, name, created_at, updated_at';

export function toUser(r: Row): UserRecord {
  return { id: r.id, email: r.email, name: r.name, createdAt: new Date(r.created_at), updatedAt: new Date(r.updated_at) };
}

/** Inserts a user; undefined when the email is already registered (the unique key decides, no race). */
export async function insertUser(
  q: Queryable,
  u: { id: string; email: string; name: string; passwordHash: string },
): Promise<UserRecord | undefined> {
  const r = await q.query(
    `INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, $3, $4)
     ON CONFLICT (email) DO NOTHING RETURNING ${COLUMNS}`,
    [u.id, u.email, u.name, u.passwordHash],
  );
  return r.rows[0] ? toUser(r.rows[0]) : undefined;
}

/** A user with the password hash, by email (a login) or by id (a signed-in user's password change). */
export async function findUserWithPassword(q: Queryable, where: { email: string } | { id: string }): Promise<UserWithPassword | undefined> {
  const [column, value] = 'id' in where ? ['id', where.id] : ['email', where.email];
  const r = await q.query(`SELECT ${COLUMNS}, password_hash FROM users WHERE ${column} = $1`, [value]);
  return r.rows[0] ? { ...toUser(r.rows[0]), passwordHash: r.rows[0].password_hash } : undefined;
}

export async function findUser(q: Queryable, id: string): Promise<UserRecord | undefined> {
  const r = await q.query(`SELECT ${COLUMNS} FROM users WHERE id = $1`, [id]);
  return r.rows[0] ? toUser(r.rows[0]) : undefined;
}

/**
 * The user's new password (a change they asked for), while the stored hash is still `was`: of two
 * changes at once, the second finds the hash changed and is refused.
 */
export async function changePasswordHash(q: Queryable, id: string, was: string, hash: string): Promise<boolean> {
  const r = await q.query('UPDATE users SET password_hash = $3, updated_at = now() WHERE id = $1 AND password_hash = $2', [id, was, hash]);
  return r.rowCount > 0;
}

/**
 * Replaces a user's password hash with the same password hashed at the current cost. Only while
 * the stored hash is still `was`, so a hash written meanwhile is never overwritten by an older
 * login's. updated_at is left alone: the user did not change anything.
 */
export async function replacePasswordHash(q: Queryable, id: string, was: string, hash: string): Promise<boolean> {
  const r = await q.query('UPDATE users SET password_hash = $3 WHERE id = $1 AND password_hash = $2', [id, was, hash]);
  return r.rowCount > 0;
}
