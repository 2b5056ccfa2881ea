// A replay the broker does not take (down, or no confirm in time) is a 503 that says what to do,
// never an opaque 500: the mark it made is given back, so the same replay goes through once the
// broker is back; and when giving the mark back fails too (the database gone at that moment),
// the answer says the row now shows a replay that sent nothing, and that force=true redoes it.
import { describe, expect, it } from 'vitest';
import { PROJECT_HEADER, type Broker } from '../../src/broker/broker.ts';
import { insertDeadLetter } from '../../src/broker/dead-letters.sql.ts';
import { Queues } from '../../src/broker/topology.ts';
import type { Database, Queryable } from '../../src/db/database.ts';
import { insertParseError } from '../../src/db/parse-errors.sql.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import type { Caller } from '../../src/domain/permissions.ts';
import { makeLogger } from '../../src/observability/logger.ts';
import { makeAdminService } from '../../src/services/admin.service.ts';
import { call, makeTenant, startApp } from './harness.ts';

/** What fails on cue: every send; and, when `giveBackFails`, the statement that gives a replay mark back. */
const faults = { brokerDown: false, giveBackFails: false };
const GIVE_BACK = /^\s*UPDATE (dead_letters|parse_errors) SET replayed_at = \$\d+(::timestamptz)?, replay_count = replay_count - 1/;

function failing<Q extends Queryable>(q: Q): Q {
  return new Proxy(q, {
    get(target, prop) {
      if (prop === 'query') {
        return (sql: string, params?: readonly unknown[]) =>
          faults.giveBackFails && GIVE_BACK.test(sql) ? Promise.reject(new Error('connection terminated unexpectedly')) : target.query(sql, params);
      }
      if (prop === 'transaction') {
        return (fn: (tx: Queryable) => Promise<unknown>, setup?: string) => (target as unknown as Database).transaction((tx) => fn(failing(tx)), setup);
      }
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

function unreachable(b: Broker): Broker {
  return new Proxy(b, {
    get(target, prop) {
      if (prop === 'send') {
        return (...args: Parameters<Broker['send']>) => (faults.brokerDown ? Promise.reject(new Error('Socket closed abruptly during opening handshake')) : target.send(...args));
      }
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
}

const { app, db, broker } = await startApp({}, { db: failing, broker: unreachable });
const t = await makeTenant(app);

const replayCount = async (table: 'dead_letters' | 'parse_errors', id: string) =>
  (await db.query<{ replay_count: number; replayed_at: Date | null }>(`SELECT replay_count, replayed_at FROM ${table} WHERE id = $1`, [id])).rows[0];

async function down<T>(opts: { giveBackFails: boolean }, fn: () => Promise<T>): Promise<T> {
  Object.assign(faults, { brokerDown: true, giveBackFails: opts.giveBackFails });
  try {
    return await fn();
  } finally {
    Object.assign(faults, { brokerDown: false, giveBackFails: false });
  }
}

const newDeadLetter = () =>
  insertDeadLetter(db, { queue: Queues.webhooksOutbound, messageId: uuidv7(), routingKey: Queues.webhooksOutbound, headers: { [PROJECT_HEADER]: t.projectId }, body: Buffer.from('{"x":1}'), error: 'Error: boom', attempts: 3 });

async function newParseError(): Promise<string> {
  const ch = await call(app, t.keys.admin, 'POST', '/channels', { body: { name: 'Loja', type: 'waha', config: { base_url: 'http://127.0.0.1:3000', api_key: 'k', session: 'default' } } });
  expect(ch.status, ch.body).toBe(201);
  const id = uuidv7();
  await insertParseError(db, { id, projectId: t.projectId, channelId: ch.json.id, provider: 'waha', eventType: 'message', reason: 'payload.id: expected a string', body: Buffer.from('{"event":"message","payload":{"id":42}}'), headers: {} });
  return id;
}

describe.each([
  { what: 'dead letter', table: 'dead_letters' as const, make: newDeadLetter, url: (id: string) => `/admin/dead-letters/${id}/replay` },
  { what: 'parse error', table: 'parse_errors' as const, make: newParseError, url: (id: string) => `/admin/parse-errors/${id}/replay` },
])('replaying a $what while the broker cannot take it', ({ table, make, url }) => {
  it('answers 503 with nothing marked, and the same replay goes through once the broker is back', async () => {
    const id = await make();
    const r = await down({ giveBackFails: false }, () => call(app, t.keys.admin, 'POST', url(id)));
    expect(r.status, r.body).toBe(503);
    expect(r.json.detail).toContain('Socket closed abruptly');
    expect(r.json.detail).toContain('nothing was marked; retry');
    expect(await replayCount(table, id)).toEqual({ replay_count: 0, replayed_at: null });

    const again = await call(app, t.keys.admin, 'POST', url(id));
    expect(again.status, again.body).toBe(202);
    expect(again.json.replay_count).toBe(1);
  });

  it('says so when its mark could not be given back either, and a forced replay then goes through', async () => {
    const id = await make();
    const r = await down({ giveBackFails: true }, () => call(app, t.keys.admin, 'POST', url(id)));
    expect(r.status, r.body).toBe(503);
    expect(r.json.detail).toContain('force=true');
    expect((await replayCount(table, id)).replay_count).toBe(1);

    // As the answer said: the plain replay is refused, the forced one sends.
    expect((await call(app, t.keys.admin, 'POST', url(id))).status).toBe(409);
    const forced = await call(app, t.keys.admin, 'POST', `${url(id)}?force=true`);
    expect(forced.status, forced.body).toBe(202);
    expect(forced.json.replay_count).toBe(2);
  });
});

describe('a replay whose mark could not be given back', () => {
  it('is logged, so the row showing a replay that sent nothing is found', async () => {
    const lines: any[] = [];
    const admin = makeAdminService({ db: failing(db), broker: unreachable(broker), logger: makeLogger('error', {}, { write: (line: string) => void lines.push(JSON.parse(line)) }) });
    const caller: Caller = { kind: 'api_key', projectId: t.projectId, role: 'admin' };
    const dl = await newDeadLetter();
    await expect(down({ giveBackFails: true }, () => admin.replay(caller, dl))).rejects.toThrow(/force=true/);
    const pe = await newParseError();
    await expect(down({ giveBackFails: true }, () => admin.replayParseError(caller, pe))).rejects.toThrow(/force=true/);
    expect(lines).toEqual([
      expect.objectContaining({ level: 50, dead_letter_id: dl, project_id: t.projectId, err: expect.objectContaining({ message: 'connection terminated unexpectedly' }), msg: 'dead-letter replay not sent, and its mark could not be given back' }),
      expect.objectContaining({ level: 50, parse_error_id: pe, project_id: t.projectId, err: expect.objectContaining({ message: 'connection terminated unexpectedly' }), msg: 'parse-error replay not sent, and its mark could not be given back' }),
    ]);
  });
});
