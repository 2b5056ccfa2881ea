// The application as most deployments run it: connected as the database's owner, which is not a
// superuser. Every tenant transaction switches to ventros_app (row-level security); migrating as
// that owner must leave it allowed to, or every request touching a project's data fails.
import { afterAll, describe, expect, it } from 'vitest';
import { migrate } from '../../src/db/migrate.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { onServices, uniqueName } from '../support/env.ts';

describe.runIf(onServices)('migrating as a database owner that is not a superuser', () => {
  const admin = connectPostgres({ url: process.env.DATABASE_URL!, max: 1 });
  const owner = uniqueName('vt_owner').replace(/[^a-z0-9_]/gi, '_').toLowerCase();
  const dbName = `${owner}_db`;
  const ownerUrl = (() => {
    const u = new URL(process.env.DATABASE_URL!);
    u.username = owner;
    u.password = '';
    u.pathname = `/${dbName}`;
    return u.toString();
  })();

  afterAll(async () => {
    await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
    await admin.query(`DROP ROLE IF EXISTS ${owner}`);
    await admin.close();
  });

  it('leaves it able to run tenant transactions under row-level security', async () => {
    // The server's trust authentication lets the role log in without a password, as tests do. On
    // PostgreSQL 15 a CREATEROLE owner may grant itself ventros_app, which the suite's superuser
    // created; on 16 and later only a role's creator may (the migration then stops with a hint).
    await admin.query(`CREATE ROLE ${owner} LOGIN CREATEROLE`);
    await admin.query(`CREATE DATABASE ${dbName} OWNER ${owner}`);
    const db = connectPostgres({ url: ownerUrl, max: 2 });
    try {
      expect((await db.query<{ su: boolean }>('SELECT rolsuper AS su FROM pg_roles WHERE rolname = current_user')).rows[0].su).toBe(false);
      await migrate(db);
      const projectId = uuidv7();
      const seen = await withTransaction(db, async (tx) => (await tx.query<{ r: string }>('SELECT current_user AS r')).rows[0].r, { projectId });
      expect(seen).toBe('ventros_app');
      // And row-level security holds there: another project's contact is not visible.
      await db.query(`INSERT INTO contacts (id, project_id, name, phone, wa_id, source) VALUES ($1, $2, 'Other', '+5511955550000', '5511955550000', 'api')`, [uuidv7(), uuidv7()]);
      const visible = await withTransaction(db, async (tx) => (await tx.query('SELECT 1 FROM contacts')).rows.length, { projectId });
      expect(visible).toBe(0);
    } finally {
      await db.close();
    }
  });
});
