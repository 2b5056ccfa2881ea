import { describe, expect, it } from 'vitest';
import { makeTestDb, onServices } from '../support/env.ts';
import { loadMigrations, migrate } from '../../src/db/migrate.ts';
import { connectPostgres } from '../../src/db/postgres.ts';

describe('migrations', () => {
  it('are all applied to a fresh test database and re-running applies nothing', async () => {
    const { db } = await makeTestDb();
    const r = await db.query<{ id: number }>('SELECT id FROM schema_migrations ORDER BY id');
    expect(r.rows.map((x) => x.id)).toEqual(loadMigrations().map((m) => m.id));
    expect(await migrate(db)).toEqual([]);
  });

  it.runIf(onServices)('two processes migrating at once apply each migration exactly once', async () => {
    const { db, url } = await makeTestDb();
    await db.exec('DROP SCHEMA public CASCADE; CREATE SCHEMA public; GRANT USAGE ON SCHEMA public TO ventros_app;');
    const a = connectPostgres({ url: url!, max: 2 });
    const b = connectPostgres({ url: url!, max: 2 });
    try {
      const [ra, rb] = await Promise.all([migrate(a), migrate(b)]);
      const all = loadMigrations().map((m) => m.name);
      expect([...ra, ...rb].sort()).toEqual([...all].sort());
      const r = await db.query('SELECT count(*)::int AS n FROM schema_migrations');
      expect(r.rows[0].n).toBe(all.length);
    } finally {
      await a.close();
      await b.close();
    }
  });

  it('runs each migration in its own transaction: a failing one leaves no trace', async () => {
    const { db } = await makeTestDb();
    const bad = [{ id: 900, name: '900_bad.sql', sql: 'CREATE TABLE will_vanish (id int); SELECT 1/0;' }];
    await expect(migrate(db, bad)).rejects.toThrow(/division by zero/);
    const r = await db.query(`SELECT to_regclass('will_vanish') IS NULL AS gone, (SELECT count(*)::int FROM schema_migrations WHERE id = 900) AS n`);
    expect(r.rows[0]).toEqual({ gone: true, n: 0 });
  });
});
