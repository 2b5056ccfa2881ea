// The one transaction helper: a tenant transaction runs as the RLS-bound role with the project set
// (entered in BEGIN's own round trip), a plain one as the owner; a rollback leaves nothing.
import { describe, expect, it } from 'vitest';
import { withTransaction, APP_ROLE } from '../../src/db/transaction.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { countingDb } from '../support/counting-db.ts';
import { makeTestDb } from '../support/env.ts';

const { db } = await makeTestDb();

describe('withTransaction', () => {
  it('enters the tenant: the application role and the project, for this transaction only', async () => {
    const projectId = uuidv7();
    const inside = await withTransaction(
      db,
      async (tx) => (await tx.query(`SELECT current_user AS who, current_setting('app.project_id', true) AS project`)).rows[0],
      { projectId },
    );
    expect(inside).toEqual({ who: APP_ROLE, project: projectId });
    const after = (await db.query(`SELECT current_user AS who, coalesce(current_setting('app.project_id', true), '') AS project`)).rows[0];
    expect(after.who).not.toBe(APP_ROLE);
    expect(after.project).toBe('');
  });

  it('refuses a project id that is not a UUID, before touching the database', async () => {
    // Valid SQL once pasted into the setup: were it not refused, the table would be dropped.
    const injection = "x', true); DROP TABLE outbox; SELECT set_config('a.b', 'y";
    const counting = countingDb(db);
    await expect(withTransaction(counting.db, async () => 1, { projectId: injection })).rejects.toThrow(/not a UUID/);
    expect(counting.counts).toEqual({ transactions: 0, queries: 0 });
    expect((await db.query(`SELECT to_regclass('outbox') IS NOT NULL AS ok`)).rows[0].ok).toBe(true);
  });

  it('rolls back everything when the function throws', async () => {
    await db.exec('CREATE TABLE IF NOT EXISTS tx_probe (v int)');
    await expect(
      withTransaction(db, async (tx) => {
        await tx.query('INSERT INTO tx_probe VALUES (1)');
        throw new Error('boom');
      }),
    ).rejects.toThrow('boom');
    expect((await db.query('SELECT count(*)::int AS n FROM tx_probe')).rows[0].n).toBe(0);
  });
});
