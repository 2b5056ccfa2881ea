// A tenant transaction (the application role, under row-level security) can read who a user is,
// and register one, but never read or change a password hash.
import { describe, expect, it } from 'vitest';
import { withTransaction } from '../../src/db/transaction.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeTestDb } from '../support/env.ts';

describe('users inside a tenant transaction', () => {
  it('shows names and emails, takes a new user, and keeps password hashes out of reach', async () => {
    const { db } = await makeTestDb();
    const projectId = uuidv7();
    const id = uuidv7();
    const inTenant = <T>(fn: (tx: Parameters<Parameters<typeof withTransaction>[1]>[0]) => Promise<T>) => withTransaction(db, fn, { projectId });

    await inTenant((tx) => tx.query(`INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, 'Ana', 'scrypt$x') ON CONFLICT (email) DO NOTHING RETURNING id, email, name, created_at, updated_at`, [id, `${id}@example.com`]));
    expect((await inTenant((tx) => tx.query('SELECT id, email, name, created_at, updated_at FROM users WHERE id = $1', [id]))).rows).toHaveLength(1);

    await expect(inTenant((tx) => tx.query('SELECT password_hash FROM users WHERE id = $1', [id]))).rejects.toThrow(/permission denied/);
    await expect(inTenant((tx) => tx.query('SELECT * FROM users WHERE id = $1', [id]))).rejects.toThrow(/permission denied/);
    await expect(inTenant((tx) => tx.query(`UPDATE users SET password_hash = 'mine' WHERE id = $1`, [id]))).rejects.toThrow(/permission denied/);
    await expect(inTenant((tx) => tx.query('DELETE FROM users WHERE id = $1', [id]))).rejects.toThrow(/permission denied/);
    // Outside a tenant transaction (logins, password changes) the hash is there as it was.
    expect((await db.query('SELECT password_hash FROM users WHERE id = $1', [id])).rows[0].password_hash).toBe('scrypt$x');
  });
});
