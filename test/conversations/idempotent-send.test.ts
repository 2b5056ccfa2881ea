// POST /messages with an Idempotency-Key: the reply and the answer a retry replays commit in one
// transaction. Before, the answer was recorded after the response, in a transaction of its own: if
// that failed (the database refused it, the process died in between) the key stayed claimed with
// the reply queued, a retry got 409 for five minutes, and then ran again — a second reply to the
// customer. The instance's database refuses exactly that later write here.
import { describe, expect, it } from 'vitest';
import type { Database, Queryable } from '../../src/db/database.ts';
import { fakeClock, rows, startFakeWaha, startWorld } from './harness.ts';

/** Late records refused so far. */
let refused = 0;

/** The database as the instance sees it: a transaction whose first statement completes an idempotency key fails. */
function refusingLateRecords(db: Database): Database {
  const view = Object.create(db) as Database;
  view.transaction = ((fn: (tx: Queryable) => Promise<unknown>, setup?: string) =>
    db.transaction((tx) => {
      let first = true;
      const guarded: Queryable = {
        query: ((sql: string, params?: readonly unknown[]) => {
          const late = first && /^\s*UPDATE idempotency_keys SET status/.test(sql);
          first = false;
          if (late) refused++;
          return late ? Promise.reject(new Error('connection terminated unexpectedly')) : tx.query(sql, params);
        }) as Queryable['query'],
        exec: (sql) => tx.exec(sql),
      };
      return fn(guarded);
    }, setup)) as Database['transaction'];
  return view;
}

const world = await startWorld({ clock: fakeClock(), wrapDb: refusingLateRecords });
const waha = await startFakeWaha();
const channel = await world.createChannel(waha.url);

const post = (key: string, body: Record<string, unknown>) =>
  world.app.inject({
    method: 'POST',
    url: '/api/v1/messages',
    headers: { authorization: `Bearer ${world.tenant.key}`, 'idempotency-key': key },
    payload: { channel_id: channel.id, type: 'text', ...body },
  });

describe('POST /messages with an Idempotency-Key', () => {
  it('replays the first answer, Location included, even when recording it after the response failed; one reply is sent', async () => {
    const body = { phone: '+5521977000202', text: 'Seu pedido saiu' };
    const first = await post('order-42-shipped', body);
    expect(first.statusCode).toBe(202);
    const { id } = first.json();
    expect(first.headers.location).toBe(`/api/v1/messages/${id}`);
    // No record after the response was even tried (the code before this change tried it, and it
    // was refused here): what a retry gets came from the reply's transaction.
    expect(refused).toBe(0);

    const again = await post('order-42-shipped', body);
    expect(again.statusCode).toBe(202);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json()).toEqual({ id, status: 'queued' });
    expect(again.headers.location).toBe(`/api/v1/messages/${id}`);
    expect(await rows(world.db, `SELECT id FROM messages WHERE project_id = $1 AND direction = 'outbound'`, [world.tenant.projectId])).toEqual([{ id }]);

    // Another body under the same key is still refused.
    expect((await post('order-42-shipped', { ...body, text: 'outro' })).statusCode).toBe(409);
  });
});
