import pino from 'pino';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { appendEvents } from '../../src/outbox/outbox.sql.ts';
import { startHousekeeping, type HousekeepingOptions } from '../../src/timers/housekeeping.ts';
import { contactCreated } from '../outbox/helpers.ts';
import { makeTestDb, onCleanup, onServices } from '../support/env.ts';

const HOUR = 3_600_000;

/** A housekeeping whose own timer never fires during the test: passes run through runOnce(). */
function housekeeping(opts: Omit<HousekeepingOptions, 'webhookRetentionDays' | 'eventRetentionDays'> & { webhookRetentionDays?: number; eventRetentionDays?: number }) {
  const h = startHousekeeping({ webhookRetentionDays: 30, eventRetentionDays: 30, firstRunAfterMs: 24 * HOUR, intervalMs: 24 * HOUR, ...opts });
  onCleanup(() => h.stop());
  return h;
}

/** The database, with every statement (and its row count) recorded, and optional failures. */
function watched(db: Database, failWhen?: (sql: string) => boolean) {
  const statements: Array<{ sql: string; rowCount: number }> = [];
  const proxy = new Proxy(db, {
    get(target, prop) {
      if (prop === 'query') {
        return async (sql: string, params?: readonly unknown[]) => {
          if (failWhen?.(sql)) throw new Error('connection terminated unexpectedly');
          const r = await target.query(sql, params);
          statements.push({ sql, rowCount: r.rowCount });
          return r;
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  const deletes = (table: string) => statements.filter((s) => new RegExp(`^\\s*DELETE FROM ${table}\\b`).test(s.sql)).map((s) => s.rowCount);
  return { db: proxy, deletes };
}

describe('housekeeping', () => {
  let db: Database;
  let projectId: string;
  let userId: string;
  let subscriptionId: string;
  let pausedSubscriptionId: string;

  beforeAll(async () => {
    ({ db } = await makeTestDb());
    userId = uuidv7();
    projectId = uuidv7();
    subscriptionId = uuidv7();
    pausedSubscriptionId = uuidv7();
    await db.query(`INSERT INTO users (id, email, name, password_hash) VALUES ($1, $2, 'Ana', 'x')`, [userId, `${userId}@example.com`]);
    await db.query(`INSERT INTO projects (id, name, created_by) VALUES ($1, 'P', $2)`, [projectId, userId]);
    for (const [id, paused] of [
      [subscriptionId, false],
      [pausedSubscriptionId, true],
    ] as const) {
      await db.query(
        `INSERT INTO webhook_subscriptions (id, project_id, url, events, secret, paused) VALUES ($1, $2, 'https://example.com/h', '{*}', 'sealed', $3)`,
        [id, projectId, paused],
      );
    }
  });

  /** A delivery last changed `ageHours` ago (created `createdAgeHours` ago), with `attempts` attempts. */
  async function delivery(status: string, ageHours: number, o: { attempts?: number; createdAgeHours?: number; subscription?: string } = {}): Promise<string> {
    const id = uuidv7();
    const attempts = o.attempts ?? 2;
    await db.query(
      `INSERT INTO webhook_deliveries (id, project_id, subscription_id, event_id, event_type, body, status, attempts, created_at, updated_at)
       VALUES ($1, $2, $3, gen_random_uuid(), 'contact.created', '{}', $4, $5,
               now() - make_interval(hours => $6::int), now() - make_interval(hours => $7::int))`,
      [id, projectId, o.subscription ?? subscriptionId, status, attempts, o.createdAgeHours ?? ageHours, ageHours],
    );
    await db.query(
      `INSERT INTO webhook_attempts (delivery_id, n, project_id, at, status_code, error_class)
       SELECT $1, n, $2, now() - make_interval(hours => $3::int), 500, 'server_error' FROM generate_series(1, $4::int) AS n`,
      [id, projectId, ageHours, attempts],
    );
    return id;
  }

  async function authToken(expiresInHours: number, revoked = false): Promise<string> {
    const id = uuidv7();
    await db.query(
      `INSERT INTO auth_tokens (id, user_id, hash, expires_at, revoked_at)
       VALUES ($1, $2, $3, now() + make_interval(hours => $4::int), CASE WHEN $5::boolean THEN now() END)`,
      [id, userId, `hash-${id}`, expiresInHours, revoked],
    );
    return id;
  }

  async function idempotencyKey(ageHours: number, done = true): Promise<string> {
    const keyHash = `key-${uuidv7()}`;
    await db.query(
      `INSERT INTO idempotency_keys (project_id, key_hash, method, path, request_hash, status, created_at)
       VALUES ($1, $2, 'POST', '/api/v1/contacts', 'r', $3, now() - make_interval(hours => $4::int))`,
      [projectId, keyHash, done ? 201 : null, ageHours],
    );
    return keyHash;
  }

  const existing = async (table: string, column: string, ids: string[]) =>
    (await db.query(`SELECT ${column} AS id FROM ${table} WHERE ${column} = ANY($1)`, [ids])).rows.map((r) => r.id).sort();
  const attemptsOf = async (ids: string[]) =>
    Number((await db.query('SELECT count(*)::int AS n FROM webhook_attempts WHERE delivery_id = ANY($1::uuid[])', [ids])).rows[0].n);
  const clear = () => db.exec('DELETE FROM webhook_deliveries; DELETE FROM auth_tokens; DELETE FROM idempotency_keys;');

  it('deletes expired login tokens, expired idempotency keys and old finished deliveries with their attempts, and nothing else', async () => {
    await clear();
    const DAY = 24;
    const gone = {
      deliveries: [await delivery('succeeded', 40 * DAY), await delivery('dead', 31 * DAY, { attempts: 8 })],
      tokens: [await authToken(-2 * DAY), await authToken(-3 * DAY, true)],
      keys: [await idempotencyKey(25), await idempotencyKey(48, false)],
    };
    const kept = {
      deliveries: [
        await delivery('succeeded', 29 * DAY),
        await delivery('dead', 1),
        // Created long ago, but replayed lately: retention counts from the last change.
        await delivery('succeeded', 2 * DAY, { createdAgeHours: 90 * DAY }),
        // Never finished, however old.
        await delivery('pending', 60 * DAY, { attempts: 0 }),
        await delivery('retrying', 60 * DAY),
        await delivery('sending', 60 * DAY),
        await delivery('retrying', 60 * DAY, { subscription: pausedSubscriptionId }),
      ],
      // Expired for less than the day of grace, live, and revoked but not yet expired.
      tokens: [await authToken(-1), await authToken(DAY), await authToken(DAY, true)],
      keys: [await idempotencyKey(23), await idempotencyKey(0, false)],
    };
    const keptAttempts = await attemptsOf(kept.deliveries);
    expect(keptAttempts).toBe(12);

    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    const result = await housekeeping({ db, logger }).runOnce();

    // The paused subscription's 60-day-old delivery is given up (dead), not deleted.
    expect(result).toEqual({ authTokens: 2, idempotencyKeys: 2, heldDeliveries: 1, webhookDeliveries: 2, events: 0, processedEvents: 0, deadLetters: 0, parseErrors: 0, failed: [] });
    expect(await existing('webhook_deliveries', 'id', [...gone.deliveries, ...kept.deliveries])).toEqual([...kept.deliveries].sort());
    expect(await attemptsOf(gone.deliveries)).toBe(0);
    expect(await attemptsOf(kept.deliveries)).toBe(keptAttempts);
    expect(await existing('auth_tokens', 'id', [...gone.tokens, ...kept.tokens])).toEqual([...kept.tokens].sort());
    expect(await existing('idempotency_keys', 'key_hash', [...gone.keys, ...kept.keys])).toEqual([...kept.keys].sort());
    expect(lines).toContainEqual(
      expect.objectContaining({ msg: 'housekeeping deleted expired rows', auth_tokens: 2, idempotency_keys: 2, webhook_deliveries: 2, webhook_retention_days: 30 }),
    );

    // Nothing left to do: the next pass deletes nothing and says nothing.
    lines.length = 0;
    expect(await housekeeping({ db, logger }).runOnce()).toEqual({ authTokens: 0, idempotencyKeys: 0, heldDeliveries: 0, webhookDeliveries: 0, events: 0, processedEvents: 0, deadLetters: 0, parseErrors: 0, failed: [] });
    expect(lines).toEqual([]);
  });

  it('deletes published events past EVENT_RETENTION_DAYS, never one still owed to the broker', async () => {
    const p = uuidv7();
    const events = (n: number) => Array.from({ length: n }, () => contactCreated(p));
    const [old, recent, owed] = [events(5), events(2), events(3)];
    await withTransaction(db, (tx) => appendEvents(tx, [...old, ...recent, ...owed]));
    const ids = (list: Array<{ id: string }>) => list.map((e) => e.id);
    await db.query(`UPDATE outbox SET published_at = now() - interval '31 days' WHERE id = ANY($1::uuid[])`, [ids(old)]);
    await db.query(`UPDATE outbox SET published_at = now() - interval '29 days' WHERE id = ANY($1::uuid[])`, [ids(recent)]);
    // Unpublished, however old: the broker was away all this time.
    await db.query(`UPDATE outbox SET created_at = now() - interval '90 days' WHERE id = ANY($1::uuid[])`, [ids(owed)]);
    const w = watched(db);
    const result = await housekeeping({ db: w.db, batchSize: 2 }).runOnce();
    expect(result.events).toBe(5);
    expect(w.deletes('outbox')).toEqual([2, 2, 1]);
    expect(await existing('outbox', 'id', [...ids(old), ...ids(recent), ...ids(owed)])).toEqual([...ids(recent), ...ids(owed)].sort());
    expect((await housekeeping({ db, eventRetentionDays: 28 }).runOnce()).events).toBe(2);
    await db.query('DELETE FROM outbox WHERE project_id = $1', [p]);
  });

  it("deletes consumers' markers of events applied more than EVENT_RETENTION_DAYS ago", async () => {
    const marker = async (ageDays: number) => {
      const id = uuidv7();
      await db.query(`INSERT INTO processed_events (consumer, event_id, processed_at) VALUES ('housekeeping-test', $1, now() - make_interval(days => $2))`, [id, ageDays]);
      return id;
    };
    const old = [await marker(31), await marker(45), await marker(400)];
    const recent = [await marker(29), await marker(0)];
    const w = watched(db);
    expect((await housekeeping({ db: w.db, batchSize: 2 }).runOnce()).processedEvents).toBe(3);
    expect(w.deletes('processed_events')).toEqual([2, 1]);
    expect(await existing('processed_events', 'event_id', [...old, ...recent])).toEqual([...recent].sort());
    await db.query(`DELETE FROM processed_events WHERE consumer = 'housekeeping-test'`);
  });

  it('deletes dead letters replayed more than EVENT_RETENTION_DAYS ago, never one not replayed however old', async () => {
    /** A dead letter written `ageDays` ago, last replayed `replayedDaysAgo` ago (never when left out). */
    const deadLetter = async (ageDays: number, replayedDaysAgo?: number) => {
      const id = uuidv7();
      await db.query(
        `INSERT INTO dead_letters (id, queue, message_id, routing_key, body, error, attempts, project_id, created_at, replayed_at, replay_count)
         VALUES ($1::uuid, 'housekeeping-test', $1::text, 'contact.created', $2, 'handler failed', 3, $3,
                 now() - make_interval(days => $4), now() - make_interval(days => $5::int), CASE WHEN $5::int IS NULL THEN 0 ELSE 1 END)`,
        [id, Buffer.from('{}'), projectId, ageDays, replayedDaysAgo ?? null],
      );
      return id;
    };
    const old = [await deadLetter(40, 31), await deadLetter(60, 45), await deadLetter(400, 400)];
    const recent = [
      await deadLetter(29, 29),
      // Written long ago, replayed lately: the days count from the last replay.
      await deadLetter(90, 1),
    ];
    // Nobody has dealt with these yet, however old.
    const notReplayed = [await deadLetter(400), await deadLetter(31), await deadLetter(0)];
    const all = [...old, ...recent, ...notReplayed];

    const w = watched(db);
    expect(await housekeeping({ db: w.db, batchSize: 2 }).runOnce()).toMatchObject({ deadLetters: 3, failed: [] });
    expect(w.deletes('dead_letters')).toEqual([2, 1]);
    expect(await existing('dead_letters', 'id', all)).toEqual([...recent, ...notReplayed].sort());

    expect((await housekeeping({ db, eventRetentionDays: 28 }).runOnce()).deadLetters).toBe(1);
    expect(await existing('dead_letters', 'id', all)).toEqual([recent[1], ...notReplayed].sort());
    await db.query(`DELETE FROM dead_letters WHERE queue = 'housekeeping-test'`);
  });

  it('deletes parse errors parked more than EVENT_RETENTION_DAYS ago, replayed or not', async () => {
    const parked = async (ageDays: number, replayed: boolean) => {
      const id = uuidv7();
      await db.query(
        `INSERT INTO parse_errors (id, project_id, channel_id, provider, event_type, reason, body, headers, created_at, replayed_at, replay_count)
         VALUES ($1, $2, NULL, 'waha', 'message', 'housekeeping-test', $3, '{}'::jsonb, now() - make_interval(days => $4),
                 CASE WHEN $5 THEN now() END, CASE WHEN $5 THEN 1 ELSE 0 END)`,
        [id, projectId, Buffer.from('{}'), ageDays, replayed],
      );
      return id;
    };
    const old = [await parked(31, false), await parked(45, true), await parked(400, false)];
    const recent = [await parked(29, false), await parked(0, true)];
    const w = watched(db);
    expect(await housekeeping({ db: w.db, batchSize: 2 }).runOnce()).toMatchObject({ parseErrors: 3, failed: [] });
    expect(w.deletes('parse_errors')).toEqual([2, 1]);
    expect(await existing('parse_errors', 'id', [...old, ...recent])).toEqual([...recent].sort());
    await db.query(`DELETE FROM parse_errors WHERE reason = 'housekeeping-test'`);
  });

  it('keeps finished deliveries for the configured number of days', async () => {
    await clear();
    const old = await delivery('succeeded', 6 * 24);
    const recent = await delivery('dead', 4 * 24);
    const result = await housekeeping({ db, webhookRetentionDays: 5 }).runOnce();
    expect(result.webhookDeliveries).toBe(1);
    expect(await existing('webhook_deliveries', 'id', [old, recent])).toEqual([recent]);
    expect(await attemptsOf([old])).toBe(0);
    expect(await attemptsOf([recent])).toBe(2);
  });

  it('gives up what a paused subscription has held, untouched, longer than WEBHOOK_RETENTION_DAYS', async () => {
    await clear();
    const DAY = 24;
    const given = [
      await delivery('retrying', 6 * DAY, { subscription: pausedSubscriptionId }),
      await delivery('pending', 9 * DAY, { attempts: 0, subscription: pausedSubscriptionId }),
      await delivery('pending', 7 * DAY, { attempts: 0, subscription: pausedSubscriptionId }),
    ];
    const untouched = [
      await delivery('pending', 4 * DAY, { attempts: 0, subscription: pausedSubscriptionId }),
      // Created long ago, recovered lately: the days count from its last change.
      await delivery('retrying', 1 * DAY, { createdAgeHours: 20 * DAY, subscription: pausedSubscriptionId }),
      // Out at the moment: its lease decides.
      await delivery('sending', 20 * DAY, { subscription: pausedSubscriptionId }),
      // Not paused: its retry schedule decides.
      await delivery('retrying', 20 * DAY),
      await delivery('pending', 20 * DAY, { attempts: 0 }),
    ];
    const before = await db.query<{ id: string; status: string }>('SELECT id, status FROM webhook_deliveries WHERE id = ANY($1::uuid[]) ORDER BY id', [untouched]);

    const result = await housekeeping({ db, webhookRetentionDays: 5, batchSize: 2 }).runOnce();
    expect(result).toMatchObject({ heldDeliveries: 3, webhookDeliveries: 0, failed: [] });
    const gaveUp = await db.query<{ status: string; next_attempt_at: Date | null; last_error: string; updated_at: Date }>(
      'SELECT status, next_attempt_at, last_error, updated_at FROM webhook_deliveries WHERE id = ANY($1::uuid[])', [given]);
    expect(gaveUp.rows).toHaveLength(3);
    for (const r of gaveUp.rows) {
      expect(r).toMatchObject({ status: 'dead', next_attempt_at: null });
      expect(r.last_error).toMatch(/paused/);
      // Dead as of now: kept the retention days again (recoverable), not deleted in this pass.
      expect(Date.now() - r.updated_at.getTime()).toBeLessThan(HOUR);
    }
    expect(await attemptsOf(given)).toBe(2);
    const after = await db.query<{ id: string; status: string }>('SELECT id, status FROM webhook_deliveries WHERE id = ANY($1::uuid[]) ORDER BY id', [untouched]);
    expect(after.rows).toEqual(before.rows);

    // Nothing left to give up.
    expect((await housekeeping({ db, webhookRetentionDays: 5 }).runOnce()).heldDeliveries).toBe(0);
  });

  it('works off a backlog in bounded chunks until one comes back short', async () => {
    await clear();
    for (let i = 0; i < 23; i++) await delivery(i % 2 ? 'succeeded' : 'dead', 40 * 24);
    const live = await delivery('retrying', 40 * 24);
    for (let i = 0; i < 10; i++) await authToken(-48);
    for (let i = 0; i < 7; i++) await idempotencyKey(30);

    const w = watched(db);
    const result = await housekeeping({ db: w.db, batchSize: 5 }).runOnce();

    expect(result).toEqual({ authTokens: 10, idempotencyKeys: 7, heldDeliveries: 0, webhookDeliveries: 23, events: 0, processedEvents: 0, deadLetters: 0, parseErrors: 0, failed: [] });
    expect(w.deletes('webhook_deliveries')).toEqual([5, 5, 5, 5, 3]);
    // A full last chunk needs one more statement to find that nothing is left.
    expect(w.deletes('auth_tokens')).toEqual([5, 5, 0]);
    expect(w.deletes('idempotency_keys')).toEqual([5, 2]);
    expect(await existing('webhook_deliveries', 'id', [live])).toEqual([live]);
    expect(Number((await db.query('SELECT count(*)::int AS n FROM webhook_deliveries')).rows[0].n)).toBe(1);
    expect(await attemptsOf([live])).toBe(2);
  });

  it('lets several processes sweep at once, each row deleted once', async () => {
    await clear();
    for (let i = 0; i < 31; i++) await delivery('succeeded', 40 * 24);
    for (let i = 0; i < 9; i++) await authToken(-48);
    const passes = await Promise.all([1, 2, 3].map(() => housekeeping({ db, batchSize: 4 }).runOnce()));
    expect(passes.flatMap((p) => p.failed)).toEqual([]);
    expect(passes.reduce((n, p) => n + p.webhookDeliveries, 0)).toBe(31);
    expect(passes.reduce((n, p) => n + p.authTokens, 0)).toBe(9);
    expect(Number((await db.query('SELECT count(*)::int AS n FROM webhook_deliveries')).rows[0].n)).toBe(0);
  });

  // What lets passes in several processes run at once: rows another transaction holds are skipped,
  // not waited for. (PGlite is one connection: nothing can hold rows while a pass runs.)
  it.runIf(onServices)('skips the rows another process is deleting instead of waiting for them', async () => {
    await clear();
    const all: string[] = [];
    for (let i = 0; i < 10; i++) all.push(await delivery('succeeded', 40 * 24));
    let release!: () => void;
    const held = new Promise<void>((r) => (release = r));
    let locked!: (ids: string[]) => void;
    const lockedIds = new Promise<string[]>((r) => (locked = r));
    const holder = db.transaction(async (tx) => {
      const r = await tx.query<{ id: string }>('SELECT id FROM webhook_deliveries ORDER BY updated_at, id LIMIT 3 FOR UPDATE');
      locked(r.rows.map((x) => x.id));
      await held;
    });
    const busy = await lockedIds;
    // Returns while the other transaction still holds its rows (were it waiting, this would hang).
    const first = await housekeeping({ db, batchSize: 4 }).runOnce();
    expect(first.webhookDeliveries).toBe(7);
    expect(await existing('webhook_deliveries', 'id', all)).toEqual([...busy].sort());
    release();
    await holder;
    expect((await housekeeping({ db, batchSize: 4 }).runOnce()).webhookDeliveries).toBe(3);
  });

  it('logs a failed task and still runs the others; the next pass catches up', async () => {
    await clear();
    const key = await idempotencyKey(30);
    const token = await authToken(-48);
    const old = await delivery('dead', 40 * 24);

    const lines: Array<Record<string, unknown>> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    let failing = true;
    const w = watched(db, (sql) => failing && /DELETE FROM idempotency_keys/.test(sql));
    const h = housekeeping({ db: w.db, logger });

    expect(await h.runOnce()).toEqual({ authTokens: 1, idempotencyKeys: 0, heldDeliveries: 0, webhookDeliveries: 1, events: 0, processedEvents: 0, deadLetters: 0, parseErrors: 0, failed: ['idempotencyKeys'] });
    expect(lines).toContainEqual(expect.objectContaining({ level: 40, task: 'idempotencyKeys', msg: 'housekeeping task failed; trying again next pass' }));
    expect(await existing('idempotency_keys', 'key_hash', [key])).toEqual([key]);
    expect(await existing('auth_tokens', 'id', [token])).toEqual([]);
    expect(await existing('webhook_deliveries', 'id', [old])).toEqual([]);

    failing = false;
    expect(await h.runOnce()).toEqual({ authTokens: 0, idempotencyKeys: 1, heldDeliveries: 0, webhookDeliveries: 0, events: 0, processedEvents: 0, deadLetters: 0, parseErrors: 0, failed: [] });
    expect(await existing('idempotency_keys', 'key_hash', [key])).toEqual([]);
  });
});
