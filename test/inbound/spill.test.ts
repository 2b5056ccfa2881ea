// The ingress under broker trouble (architecture §7): every webhook answered 200 while the broker
// refuses, hangs or is cut off is in the CRM once it is back; 503 only when the database refuses
// too. Embedded: the broker's send is switched to fail or hang. Services: RabbitMQ is also reached
// through a TCP proxy that the test cuts and freezes (the shared server itself is never stopped).
import { describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { onCleanup, onServices, uniqueName, waitFor } from '../support/env.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import { deleteRabbitNamespace } from '../support/brokers.ts';
import { count, messageByKey, startInbound, wahaText, type Channel, type Inbound } from './harness.ts';

async function postBatch(t: Inbound, ch: Channel, prefix: string, n: number): Promise<string[]> {
  const ids: string[] = [];
  for (let i = 0; i < n; i++) {
    const id = `${prefix}${String(i).padStart(4, '0')}`;
    const started = Date.now();
    const r = await t.post(ch, wahaText('5511933330001', `durante a falha ${i}`, { id }));
    expect(r.status, `webhook ${i}`).toBe(200);
    expect(r.json.status).toBe('queued');
    // Bounded: the confirm deadline is a few hundred ms, never the broker's own timeouts (RabbitMQ's
    // confirm waits 30 s; a hanging embedded send, forever). The bound sits well below those, with
    // room for a slow machine.
    expect(Date.now() - started).toBeLessThan(5000);
    ids.push(id);
  }
  return ids;
}

async function expectAllStored(t: Inbound, ch: Channel, ids: string[]) {
  await waitFor(async () => (await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])) === ids.length, `${ids.length} messages stored`, 60_000);
  for (const id of ids) expect(await messageByKey(t.db, ch.id, id), id).toBeDefined();
  await waitFor(async () => (await count(t.db, 'SELECT 1 FROM inbound_events')) === 0, 'spill table drained');
  const s = (await t.db.query('SELECT message_count FROM sessions WHERE channel_id = $1', [ch.id])).rows;
  expect(s).toEqual([{ message_count: ids.length }]);
}

/** A view of the database whose plain queries fail while switched off. */
function switchableDb() {
  let off = false;
  return {
    set: (v: boolean) => void (off = v),
    wrap(db: Database): Database {
      const w = Object.create(db) as Database;
      w.query = (sql, params) => (off ? Promise.reject(new Error('database is down (test)')) : db.query(sql, params));
      return w;
    },
  };
}

describe('broker down while webhooks arrive', () => {
  it('spills when the broker refuses, and delivers every spilled webhook when it is back', async () => {
    const t = await startInbound();
    const ch = await t.createChannel();
    t.broker.mode = 'failing';
    const ids = await postBatch(t, ch, 'DOWN', 25);
    expect(await count(t.db, 'SELECT 1 FROM inbound_events WHERE channel_id = $1', [ch.id])).toBe(25);
    expect(await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])).toBe(0);
    t.broker.mode = 'up';
    await expectAllStored(t, ch, ids);
  });

  it('spills when the broker does not confirm in time', async () => {
    const t = await startInbound();
    const ch = await t.createChannel();
    t.broker.mode = 'hanging';
    const ids = await postBatch(t, ch, 'HANG', 5);
    expect(await count(t.db, 'SELECT 1 FROM inbound_events WHERE channel_id = $1', [ch.id])).toBe(5);
    t.broker.mode = 'up';
    await expectAllStored(t, ch, ids);
  });

  it('answers 503 only when the database refuses the spill too', async () => {
    const down = switchableDb();
    const t = await startInbound({ wrapDb: down.wrap });
    const ch = await t.createChannel();
    expect((await t.post(ch, wahaText('5511933330002', 'antes', { id: 'BOTH0' }))).status).toBe(200); // caches the channel
    t.broker.mode = 'failing';
    down.set(true);
    const r = await t.post(ch, wahaText('5511933330002', 'durante', { id: 'BOTH1' }));
    down.set(false);
    t.broker.mode = 'up';
    expect(r.status).toBe(503);
    expect(r.json.code).toBe('unavailable');
    expect((await t.post(ch, wahaText('5511933330002', 'depois', { id: 'BOTH2' }))).status).toBe(200);
    await waitFor(() => messageByKey(t.db, ch.id, 'BOTH2'), 'stored after recovery');
    expect(await messageByKey(t.db, ch.id, 'BOTH1')).toBeUndefined(); // refused, so the provider retries it
  });

  it('answers 503, not 500, when the database cannot say which channel a webhook is for', async () => {
    const down = switchableDb();
    const t = await startInbound({ wrapDb: down.wrap });
    const ch = await t.createChannel(); // never looked up, so not cached
    down.set(true);
    const r = await t.post(ch, wahaText('5511933330003', 'sem banco', { id: 'NODB1' }));
    down.set(false);
    expect(r.status).toBe(503);
    expect(r.json.code).toBe('unavailable');
    expect((await t.post(ch, wahaText('5511933330003', 'com banco', { id: 'NODB2' }))).status).toBe(200);
    await waitFor(() => messageByKey(t.db, ch.id, 'NODB2'), 'stored after recovery');
  });

  it.runIf(onServices)('survives RabbitMQ being cut off and frozen (through a TCP proxy)', async () => {
    const u = new URL(process.env.AMQP_URL!);
    const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port || 5672) });
    onCleanup(() => proxy.close());
    const namespace = `${uniqueName('vt')}.`;
    const t = await startInbound({
      async makeBroker(db) {
        const { connectRabbitBroker } = await import('../../src/broker/rabbitmq.ts');
        const b = await connectRabbitBroker({ url: proxy.urlFor(process.env.AMQP_URL!), db, retryDelaysMs: [100, 300, 1000], namespace });
        onCleanup(async () => {
          await b.close();
          await deleteRabbitNamespace(namespace);
        });
        return Object.assign(b, { namespace });
      },
    });
    const ch = await t.createChannel();
    expect((await t.post(ch, wahaText('5511933330001', 'antes', { id: 'PROXY0' }))).status).toBe(200);
    await waitFor(() => messageByKey(t.db, ch.id, 'PROXY0'), 'first message through the proxy');

    proxy.cut();
    const cut = await postBatch(t, ch, 'CUT', 20);
    proxy.restore();
    proxy.freeze();
    const frozen = await postBatch(t, ch, 'FROZEN', 3);
    proxy.thaw();
    expect(await count(t.db, 'SELECT 1 FROM inbound_events WHERE channel_id = $1', [ch.id])).toBeGreaterThan(0);
    await expectAllStored(t, ch, ['PROXY0', ...cut, ...frozen]);
  });
});
