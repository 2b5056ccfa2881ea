// A send the provider accepted must be recorded, not sent again, when the database is away for
// longer than a blip. WAHA has no idempotency key: a sender that gives up recording leaves the
// message queued, and once its lease is over another sender sends it again — a second copy to
// the customer. The database link of the running instance is refused for 8 s (a failover) from
// the moment WAHA accepts the message; the fake WAHA is the only other party.
import { describe, expect, it } from 'vitest';
import type { Database, Queryable } from '../../src/db/database.ts';
import { onCleanup, waitFor } from '../support/env.ts';
import { fakeClock, rows, sentId, startFakeWaha, startWorld, type WahaCall } from './harness.ts';

const OUTAGE_MS = 8000;

/** The database as the instance sees it, refusing every statement while `down`. */
function refusable(db: Database): { db: Database; down: (ms: number) => void } {
  let downUntil = 0;
  const refused = () => Promise.reject(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }));
  const isDown = () => Date.now() < downUntil;
  const view = Object.create(db) as Database;
  view.query = ((sql: string, params?: readonly unknown[]) => (isDown() ? refused() : db.query(sql, params))) as Database['query'];
  view.transaction = (fn, setup) => (isDown()
    ? refused()
    : db.transaction((tx) => {
      const guarded: Queryable = {
        query: ((sql: string, params?: readonly unknown[]) => (isDown() ? refused() : tx.query(sql, params))) as Queryable['query'],
        exec: (sql) => (isDown() ? refused().then(() => undefined) : tx.exec(sql)),
      };
      return fn(guarded);
    }, setup)) as never;
  return { db: view, down: (ms) => (downUntil = Date.now() + ms) };
}

let link!: ReturnType<typeof refusable>;
const world = await startWorld({ clock: fakeClock(), wrapDb: (db) => (link = refusable(db)).db });
const waha = await startFakeWaha();
const channel = await world.createChannel(waha.url);
onCleanup(async () => link.down(0));

describe('a database outage right after the provider accepted a reply', () => {
  it('records the send when the database is back, and sends it once', async () => {
    const phone = '5521977000101';
    const sends = () => waha.calls.filter((c: WahaCall) => c.path.startsWith('/api/send') && c.body?.chatId === `${phone}@c.us`);
    waha.respond((call) => {
      if (!call.path.startsWith('/api/send') || call.body?.chatId !== `${phone}@c.us`) return undefined;
      link.down(OUTAGE_MS);
      return { status: 201, body: { id: { fromMe: true, _serialized: sentId(`${phone}@c.us`) } } };
    });
    const r = await world.tenant.api('POST', '/messages', { channel_id: channel.id, type: 'text', phone: `+${phone}`, text: 'Seu pedido saiu' });
    expect(r.status).toBe(202);
    // Before: the sender gave up after about 5 s; the message stayed queued until its lease (60 s)
    // ran out, and was then sent a second time.
    const m = await waitFor(async () => (await rows(world.db, `SELECT * FROM messages WHERE id = $1 AND status <> 'queued'`, [r.json.id]))[0], 'the send recorded', OUTAGE_MS + 12_000);
    expect({ status: m.status, external: m.external_id?.startsWith(`true_${phone}@c.us_`), sends: sends().length }).toEqual({ status: 'sent', external: true, sends: 1 });
  }, 30_000);
});
