// Admin endpoints show a project admin their own project's share of the machinery, nothing else.
import { describe, expect, it } from 'vitest';
import { PROJECT_HEADER } from '../../src/broker/broker.ts';
import { getDeadLetter, insertDeadLetter, LIST_BODY_BYTES } from '../../src/broker/dead-letters.sql.ts';
import { Queues } from '../../src/broker/topology.ts';
import { insertParseError } from '../../src/db/parse-errors.sql.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { call, makeTenant, startApp } from './harness.ts';
import { deadLetterOfA, type World } from './isolation-fixtures.ts';

const { app, db, broker } = await startApp();
const world: World = { app, db, broker, a: await makeTenant(app), b: await makeTenant(app) };
const { a, b } = world;
const swapped: World = { ...world, a: b, b: a };
const dlA = await deadLetterOfA(world);
await deadLetterOfA(world);
const dlB = await deadLetterOfA(swapped);

describe('admin endpoints', () => {
  it("count only the caller's dead letters per queue", async () => {
    const qa = await call(app, a.keys.admin, 'GET', '/admin/queues');
    expect(qa.status).toBe(200);
    const row = (r: any) => r.json.data.find((q: any) => q.queue === Queues.webhooksOutbound);
    expect(row(qa)).toMatchObject({ dead_letters: 2 });
    expect(row(await call(app, b.keys.admin, 'GET', '/admin/queues'))).toMatchObject({ dead_letters: 1 });
  });

  it("list only the caller's dead letters, body and error included", async () => {
    const r = await call(app, a.keys.admin, 'GET', '/admin/dead-letters');
    expect(r.json.data).toHaveLength(2);
    expect(r.json.data.map((d: any) => d.id)).toContain(dlA);
    expect(r.json.data[0]).toMatchObject({ queue: Queues.webhooksOutbound, body_encoding: 'utf8', error: 'Error: receiver said 500', attempts: 3 });
    expect(r.body).not.toContain(dlB);
  });

  it("replay the caller's dead letter, and answer 404 for another project's", async () => {
    const other = await call(app, b.keys.admin, 'POST', `/admin/dead-letters/${dlA}/replay`);
    expect(other.status).toBe(404);
    const own = await call(app, a.keys.admin, 'POST', `/admin/dead-letters/${dlA}/replay`);
    expect(own.status).toBe(202);
    expect(own.json).toMatchObject({ id: dlA, queue: Queues.webhooksOutbound, replay_count: 1 });
    // A replayed dead letter is no longer counted as one (the row is kept, with its replay).
    const qa = await call(app, a.keys.admin, 'GET', '/admin/queues');
    expect(qa.json.data.find((q: any) => q.queue === Queues.webhooksOutbound)).toMatchObject({ dead_letters: 1 });

    // Once replayed, a second replay (a double click) is refused, unless forced.
    const again = await call(app, a.keys.admin, 'POST', `/admin/dead-letters/${dlA}/replay`);
    expect(again.status).toBe(409);
    expect(again.json.detail).toMatch(/was replayed at .* \(1 time\).*force=true/);
    expect((await call(app, a.keys.admin, 'POST', `/admin/dead-letters/${dlA}/replay?force=false`)).status).toBe(409);
    expect((await call(app, a.keys.admin, 'POST', `/admin/dead-letters/${dlA}/replay?force=maybe`)).status).toBe(400);
    const forced = await call(app, a.keys.admin, 'POST', `/admin/dead-letters/${dlA}/replay?force=true`);
    expect(forced.status).toBe(202);
    expect(forced.json).toMatchObject({ id: dlA, replay_count: 2 });
  });

  it('send a dead letter once when two replays of it come at the same moment (a double click)', async () => {
    const t = await makeTenant(app);
    const dl = await insertDeadLetter(db, { queue: Queues.webhooksOutbound, messageId: uuidv7(), routingKey: Queues.webhooksOutbound, headers: { [PROJECT_HEADER]: t.projectId }, body: Buffer.from('{"x":1}'), error: 'Error: boom', attempts: 3 });
    const both = await Promise.all([1, 2].map(() => call(app, t.keys.admin, 'POST', `/admin/dead-letters/${dl}/replay`)));
    expect(both.map((r) => r.status).sort()).toEqual([202, 409]);
    const [row] = (await db.query('SELECT replay_count FROM dead_letters WHERE id = $1', [dl])).rows;
    expect(row.replay_count).toBe(1);
  });

  it('show the first 64 KiB of each big body in lists, and the whole one by id', async () => {
    const t = await makeTenant(app);
    // 100,000 bytes of text whose characters take two bytes each: the 64 KiB edge cuts one in half.
    const text = `{"x":"${'é'.repeat(49_995)}"}`;
    const body = Buffer.from(text);
    const dl = await insertDeadLetter(db, { queue: Queues.inboundRaw, messageId: uuidv7(), routingKey: Queues.inboundRaw, headers: { [PROJECT_HEADER]: t.projectId }, body, error: 'x', attempts: 5 });
    const pe = uuidv7();
    await insertParseError(db, { id: pe, projectId: t.projectId, channelId: null, provider: 'waha', eventType: 'message', reason: 'x', body, headers: {} });

    const listed = (await call(app, t.keys.admin, 'GET', '/admin/dead-letters')).json.data.find((d: any) => d.id === dl);
    const listedPe = (await call(app, t.keys.admin, 'GET', '/admin/parse-errors')).json.data.find((p: any) => p.id === pe);
    for (const item of [listed, listedPe]) {
      expect(item).toMatchObject({ body_encoding: 'utf8', body_size: body.length, body_truncated: true });
      expect(Buffer.byteLength(item.body)).toBeLessThanOrEqual(LIST_BODY_BYTES);
      expect(Buffer.byteLength(item.body)).toBeGreaterThan(LIST_BODY_BYTES - 4);
      expect(text.startsWith(item.body)).toBe(true);
    }
    for (const url of [`/admin/dead-letters/${dl}`, `/admin/parse-errors/${pe}`]) {
      const whole = await call(app, t.keys.admin, 'GET', url);
      expect(whole.status, url).toBe(200);
      expect(whole.json).toMatchObject({ body: text, body_encoding: 'utf8', body_size: body.length, body_truncated: false });
      // Another project's: not found.
      expect((await call(app, a.keys.admin, 'GET', url)).status).toBe(404);
      expect((await call(app, t.keys.manager, 'GET', url)).status).toBe(403);
    }
    // A replay sends the whole body, not what the list showed.
    expect((await call(app, t.keys.admin, 'POST', `/admin/dead-letters/${dl}/replay`)).status).toBe(202);
    expect((await getDeadLetter(db, dl))!.body.equals(body)).toBe(true);
  });

  it('are for admins only', async () => {
    for (const role of ['manager', 'agent', 'viewer'] as const) {
      expect((await call(app, a.keys[role], 'GET', '/admin/queues')).status).toBe(403);
      expect((await call(app, a.keys[role], 'POST', `/admin/dead-letters/${dlA}/replay`)).status).toBe(403);
    }
  });

  it("serve the project's event log, newest first, with filters", async () => {
    // Registration appended pipeline.created; publish it as the relay would.
    await db.query('UPDATE outbox SET published_at = now() WHERE published_at IS NULL');
    const r = await call(app, a.keys.manager, 'GET', '/events', { query: { type: 'pipeline.created' } });
    expect(r.status).toBe(200);
    expect(r.json.data).toHaveLength(1);
    expect(r.json.data[0]).toMatchObject({ type: 'pipeline.created', project_id: a.projectId, aggregate_id: a.pipelineId });
    expect((await call(app, a.keys.agent, 'GET', '/events')).status).toBe(403);
    expect((await call(app, a.keys.admin, 'GET', '/events', { query: { type: 'no.such' } })).status).toBe(400);
  });
});
