// The second wall: with the application's own filters bypassed — query functions called directly
// and asked for A's rows, inside a transaction set to project B — row-level security returns
// none of A's rows and refuses to write any. Runs on PGlite (superuser: SET LOCAL ROLE makes it
// real) and on PostgreSQL.
import { describe, expect, it } from 'vitest';
import { findApiKey, listApiKeys, revokeApiKey } from '../../src/db/api-keys.sql.ts';
import { countDeadLettersByQueue } from '../../src/db/dead-letters-read.sql.ts';
import { listParseErrorsPage } from '../../src/db/parse-errors-read.sql.ts';
import { findProject, updateProject } from '../../src/db/projects.sql.ts';
import { listMembers } from '../../src/db/project-members.sql.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { getDeadLetter, listDeadLetters } from '../../src/broker/dead-letters.sql.ts';
import { listEvents } from '../../src/outbox/outbox.sql.ts';
import { makeTenant, startApp } from './harness.ts';
import { deadLetterOfA, seeds, type World } from './isolation-fixtures.ts';

const { app, db, broker } = await startApp();
const world: World = { app, db, broker, a: await makeTenant(app), b: await makeTenant(app) };
for (const seed of seeds) await seed(world);
const A = world.a.projectId;
const B = world.b.projectId;
const asB = <T>(fn: Parameters<typeof withTransaction<T>>[1]) => withTransaction(db, fn, { projectId: B });

/** Tables holding a project_id column (the tenant tables, by the pattern of 004_accounts.sql). */
async function tenantTables(): Promise<string[]> {
  const r = await db.query(
    `SELECT table_name FROM information_schema.columns
     WHERE table_schema = 'public' AND column_name = 'project_id' ORDER BY table_name`,
  );
  return r.rows.map((x) => x.table_name);
}

describe('row-level security', () => {
  it('binds an application role that is neither superuser nor allowed to bypass it', async () => {
    const r = await db.query(`SELECT rolsuper, rolbypassrls FROM pg_roles WHERE rolname = 'ventros_app'`);
    expect(r.rows[0]).toEqual({ rolsuper: false, rolbypassrls: false });
  });

  it('is enabled, with a policy, on every table that has a project_id (and on projects)', async () => {
    const tables = [...(await tenantTables()), 'projects'];
    const r = await db.query(
      `SELECT c.relname, c.relrowsecurity, (SELECT count(*)::int FROM pg_policy p WHERE p.polrelid = c.oid) AS policies
       FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
       WHERE n.nspname = 'public' AND c.relname = ANY($1)`,
      [tables],
    );
    const unprotected = r.rows.filter((x) => !x.relrowsecurity || x.policies === 0).map((x) => x.relname);
    expect(unprotected).toEqual([]);
    expect(r.rows.length).toBe(new Set(tables).size);
  });

  it("shows B's transaction none of A's rows in any tenant table, though A has rows", async () => {
    const tables = [...(await tenantTables()), 'projects'];
    for (const t of tables) {
      const col = t === 'projects' ? 'id' : 'project_id';
      const asOwner = await db.query(`SELECT count(*)::int AS n FROM ${t} WHERE ${col} = $1`, [A]);
      const inB = await asB((tx) => tx.query(`SELECT count(*)::int AS n FROM ${t} WHERE ${col} = $1`, [A]));
      expect({ table: t, n: inB.rows[0].n }).toEqual({ table: t, n: 0 });
      if (['projects', 'project_members', 'api_keys', 'pipelines', 'pipeline_statuses', 'outbox', 'dead_letters', 'parse_errors'].includes(t)) {
        expect({ table: t, n: asOwner.rows[0].n > 0 }).toEqual({ table: t, n: true });
      }
    }
  });

  it("returns nothing of A's from the query layer asked for A's rows inside B's transaction", async () => {
    const dl = await deadLetterOfA(world);
    await asB(async (tx) => {
      expect(await findProject(tx, A)).toBeUndefined();
      expect((await listApiKeys(tx, A, {})).rows).toEqual([]);
      expect(await findApiKey(tx, A, world.a.keyIds.admin)).toBeUndefined();
      expect((await listMembers(tx, A, {})).rows).toEqual([]);
      expect((await listDeadLetters(tx, { projectId: A, limit: 50 })).items).toEqual([]);
      expect(await getDeadLetter(tx, dl)).toBeUndefined();
      expect(await countDeadLettersByQueue(tx, A)).toEqual(new Map());
      expect((await listParseErrorsPage(tx, { projectId: A })).rows).toEqual([]);
      expect((await listEvents(tx, { projectId: A, limit: 50 })).data).toEqual([]);
    });
    // The same calls as the owner (no tenant role) do see A's rows: the emptiness above is RLS.
    expect(await findProject(db, A)).toBeDefined();
    expect((await listDeadLetters(db, { projectId: A, limit: 50 })).items.length).toBeGreaterThan(0);
  });

  it("changes none of A's rows from B's transaction, and refuses to write rows for A", async () => {
    await asB(async (tx) => {
      expect(await updateProject(tx, A, { name: 'hijacked' })).toBeUndefined();
      expect(await revokeApiKey(tx, A, world.a.keyIds.admin)).toBeUndefined();
      const deleted = await tx.query('DELETE FROM api_keys WHERE project_id = $1', [A]);
      expect(deleted.rowCount).toBe(0);
    });
    await expect(
      asB((tx) =>
        tx.query(`INSERT INTO api_keys (id, project_id, name, role, prefix, hash) VALUES (gen_random_uuid(), $1, 'x', 'admin', 'vtr_x', 'h')`, [A]),
      ),
    ).rejects.toThrow(/row-level security/);
    expect((await findProject(db, A))?.name).not.toBe('hijacked');
    expect((await findApiKey(db, A, world.a.keyIds.admin))?.revokedAt).toBeNull();
  });

  it('shows a tenant transaction that names no project nothing at all', async () => {
    const r = await db.transaction(async (tx) => {
      await tx.query(`SELECT set_config('app.project_id', '', true)`);
      await tx.query('SET LOCAL ROLE ventros_app');
      return tx.query('SELECT (SELECT count(*)::int FROM projects) AS p, (SELECT count(*)::int FROM api_keys) AS k');
    });
    expect(r.rows[0]).toEqual({ p: 0, k: 0 });
  });

  it('keeps login tokens and the login throttle out of reach of the application role', async () => {
    await expect(asB((tx) => tx.query('SELECT count(*) FROM auth_tokens'))).rejects.toThrow(/permission denied/);
    await expect(asB((tx) => tx.query('SELECT count(*) FROM login_attempts'))).rejects.toThrow(/permission denied/);
  });
});
