import { describe, expect, it } from 'vitest';
import { makeTestDb, onServices } from '../support/env.ts';
import { loadMigrations, migrate } from '../../src/db/migrate.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { uuidv7 } from '../../src/domain/ids.ts';

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

  it('012 trims the shown settings of channels saved before input was trimmed, and nothing else', async () => {
    const { db } = await makeTestDb();
    // As the API stored them before: spaces pasted around shown settings, secrets as given.
    const rows = [
      { id: uuidv7(), type: 'whatsapp_cloud', config: { phone_number_id: ' 106540352242922\n', api_version: 'v21.0', api_base_url: 'https://graph.example.com/ ' }, ref: ' 106540352242922\n' },
      { id: uuidv7(), type: 'waha', config: { base_url: '\thttp://waha.local:3000/ ', session: 'default ' }, ref: 'default ' },
      { id: uuidv7(), type: 'waha', config: { base_url: 'http://clean.local', session: 'clean' }, ref: 'clean' },
      { id: uuidv7(), type: 'waha', config: {}, ref: ' only-ref' },
      // Pasted from a web page: no-break spaces, as JavaScript's trim() removes them.
      { id: uuidv7(), type: 'whatsapp_cloud', config: { phone_number_id: '\u00a0106540352242923\u202f' }, ref: '\u00a0106540352242923\u202f' },
    ];
    for (const r of rows) {
      await db.query(
        `INSERT INTO channels (id, project_id, name, type, config, secrets, webhook_token, external_ref, updated_at)
         VALUES ($1, $2, 'old', $3, $4::jsonb, ' sealed secret ', 'tok', $5, '2026-01-01T00:00:00Z')`,
        [r.id, uuidv7(), r.type, JSON.stringify(r.config), r.ref],
      );
    }
    // Never written by the API, but it must not stop the migration (or the process starting).
    const oddId = uuidv7();
    await db.query(
      `INSERT INTO channels (id, project_id, name, type, config, secrets, webhook_token, external_ref) VALUES ($1, $2, 'odd', 'waha', 'null'::jsonb, 's', 'tok', ' odd ')`,
      [oddId, uuidv7()],
    );
    await db.query('DELETE FROM schema_migrations WHERE id = 12');
    expect(await migrate(db)).toEqual(['012_channel_settings_trimmed.sql']);

    const got = await db.query<{ id: string; config: Record<string, string>; external_ref: string; secrets: string; updated_at: Date }>(
      'SELECT id, config, external_ref, secrets, updated_at FROM channels WHERE id = ANY($1::uuid[])',
      [rows.map((r) => r.id)],
    );
    const byId = new Map(got.rows.map((r) => [r.id, r]));
    expect(byId.get(rows[0].id)).toMatchObject({ config: { phone_number_id: '106540352242922', api_version: 'v21.0', api_base_url: 'https://graph.example.com' }, external_ref: '106540352242922' });
    expect(byId.get(rows[1].id)).toMatchObject({ config: { base_url: 'http://waha.local:3000', session: 'default' }, external_ref: 'default' });
    expect(byId.get(rows[2].id)).toMatchObject({ config: { base_url: 'http://clean.local', session: 'clean' }, external_ref: 'clean' });
    expect(byId.get(rows[3].id)).toMatchObject({ config: {}, external_ref: 'only-ref' });
    expect(byId.get(rows[4].id)).toMatchObject({ config: { phone_number_id: '106540352242923' }, external_ref: '106540352242923' });
    const odd = await db.query<{ config: unknown; external_ref: string }>('SELECT config, external_ref FROM channels WHERE id = $1', [oddId]);
    expect(odd.rows[0]).toEqual({ config: null, external_ref: ' odd ' });
    for (const r of got.rows) {
      expect(r.secrets).toBe(' sealed secret ');
      expect(new Date(r.updated_at).toISOString()).toBe('2026-01-01T00:00:00.000Z');
    }
  });

  it("029 keys reactions by party: the contact's newest under any of their ids, ours kept, others untouched", async () => {
    const { db } = await makeTestDb();
    const projectId = uuidv7();
    const channelId = uuidv7();
    const contactId = uuidv7();
    await db.query(`INSERT INTO channels (id, project_id, name, type, config, secrets, webhook_token) VALUES ($1, $2, 'c', 'waha', '{}'::jsonb, 's', 'tok')`, [channelId, projectId]);
    await db.query(`INSERT INTO contacts (id, project_id, phone) VALUES ($1, $2, '+5511900000005')`, [contactId, projectId]);
    const cases = {
      // Added under the LID, removed later under the phone: the removal is the newest, none is left.
      removedUnderPhone: [{ '123@lid': '❤️' }, { '123@lid': '2026-01-01T00:00:10Z', '+5511900000005': '2026-01-01T00:00:20Z' }],
      // The newest of two ids wins; ours stays as it was.
      twoIds: [{ '123@lid': '❤️', '+5511900000005': '😂', me: '👍' }, { '123@lid': '2026-01-01T00:00:30Z', '+5511900000005': '2026-01-01T00:00:20Z', me: '2026-01-01T00:00:05Z' }],
      // Stored before reactions had times (migration 013).
      untimed: [{ '+5511900000005': '🙏' }, {}],
      ours: [{ me: '👍' }, { me: '2026-01-01T00:00:05Z' }],
      none: [{}, {}],
    } as const;
    const ids: Record<string, string> = {};
    for (const [name, [reactions, at]] of Object.entries(cases)) {
      ids[name] = uuidv7();
      await db.query(
        `INSERT INTO messages (id, project_id, channel_id, contact_id, direction, from_me, type, status, "timestamp", external_id, reactions, reactions_at, updated_at)
         VALUES ($1, $2, $3, $4, 'inbound', false, 'text', 'received', now(), $5, $6::jsonb, $7::jsonb, '2026-01-01T00:00:00Z')`,
        [ids[name], projectId, channelId, contactId, `false_5511900000005@c.us_${name}`, JSON.stringify(reactions), JSON.stringify(at)],
      );
    }
    await db.query('DELETE FROM schema_migrations WHERE id = 29');
    expect(await migrate(db)).toEqual(['029_reactions_by_party.sql']);
    const got = await db.query<{ id: string; reactions: unknown; reactions_at: Record<string, string>; updated_at: Date }>(
      'SELECT id, reactions, reactions_at, updated_at FROM messages WHERE id = ANY($1::uuid[])',
      [Object.values(ids)],
    );
    const byName = Object.fromEntries(Object.entries(ids).map(([name, id]) => [name, got.rows.find((r) => r.id === id)!]));
    const times = (x: Record<string, string>) => Object.fromEntries(Object.entries(x).map(([k, v]) => [k, new Date(v).toISOString()]));
    expect(byName.removedUnderPhone.reactions).toEqual({});
    expect(times(byName.removedUnderPhone.reactions_at)).toEqual({ contact: '2026-01-01T00:00:20.000Z' });
    expect(byName.twoIds.reactions).toEqual({ contact: '❤️', me: '👍' });
    expect(times(byName.twoIds.reactions_at)).toEqual({ contact: '2026-01-01T00:00:30.000Z', me: '2026-01-01T00:00:05.000Z' });
    expect(byName.untimed.reactions).toEqual({ contact: '🙏' });
    expect(byName.untimed.reactions_at).toEqual({});
    expect(byName.ours.reactions).toEqual({ me: '👍' });
    expect(byName.none.reactions).toEqual({});
    for (const r of got.rows) expect(new Date(r.updated_at).toISOString()).toBe('2026-01-01T00:00:00.000Z');
  });
});
