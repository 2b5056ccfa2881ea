// Session lifecycle: the inactivity timer (a due time per session, swept with SKIP LOCKED), manual
// close, and the metrics a session ends with. The sweeper's clock is fake: messages carry provider
// times T0 + n seconds and the test moves the clock, so "on time" is exact and no test sleeps.
import { describe, expect, it } from 'vitest';
import { Queues } from '../../src/broker/topology.ts';
import { startContactTotalsConsumer } from '../../src/consumers/contact-totals.consumer.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { sessionsActive } from '../../src/observability/metrics.ts';
import { makeSessionsGaugeRefresher } from '../../src/observability/queue-gauges.ts';
import { startSessionSweeper } from '../../src/timers/session-sweeper.ts';
import { waitFor } from '../support/env.ts';
import { at, events, fakeClock, rows, startWorld, T0, wahaMessage, type World } from './harness.ts';
import { newPhone } from '../support/phones.ts';
import { brokerKinds } from '../support/brokers.ts';
import { publishAndSettle, startLoneConsumer } from './lone-consumer.ts';

const clock = fakeClock();
const world: World = await startWorld({ clock });
const { db } = world;
const channel = await world.createChannel('http://127.0.0.1:9');


/** A sweeper of the test's own, sharing the clock, to run a pass right now. */
function extraSweeper() {
  const s = startSessionSweeper({ db, now: clock.now, intervalMs: 60_000 });
  return s;
}

async function sessionsOf(phone: string): Promise<any[]> {
  return rows(
    db,
    `SELECT s.* FROM sessions s JOIN contacts c ON c.id = s.contact_id WHERE c.phone = $1 ORDER BY s.started_at, s.created_at`,
    ['+' + phone],
  );
}

async function say(phone: string, seconds: number, o: { fromMe?: boolean } = {}) {
  const before = (await rows(db, 'SELECT count(*)::int AS n FROM messages')).at(0).n as number;
  await world.postWebhook(channel, wahaMessage(phone, `msg at ${seconds}`, { seconds, fromMe: o.fromMe }));
  await waitFor(async () => (await rows(db, 'SELECT count(*)::int AS n FROM messages')).at(0).n > before, 'the message to be stored');
}

describe('the inactivity timeout', () => {
  it('closes a session at last activity + timeout, not a second before', async () => {
    clock.set(0);
    const phone = newPhone();
    await say(phone, 0);
    const [s] = await sessionsOf(phone);
    expect(new Date(s.due_at)).toEqual(at(60));

    const sweeper = extraSweeper();
    clock.set(59);
    expect(await sweeper.sweepNow()).toBe(0);
    expect((await sessionsOf(phone))[0].status).toBe('active');

    clock.set(61);
    // The sweeper running in the worker closes it on its own.
    const ended = await waitFor(async () => (await sessionsOf(phone)).find((x) => x.status === 'ended'), 'the session to end');
    await sweeper.stop();
    expect(ended.end_reason).toBe('inactivity_timeout');
    expect(new Date(ended.ended_at)).toEqual(at(60));
    expect(ended.due_at).toBeNull();
    const [e] = await events(db, { aggregateId: s.id, type: 'session.ended' });
    expect(e.data).toMatchObject({ session_id: s.id, reason: 'inactivity_timeout', message_count: 1, messages_from_contact: 1, messages_from_agent: 0, duration_seconds: 60, closed_by: null });
    expect(new Date(e.occurred_at)).toEqual(at(60));
  });

  it('is postponed by a message that arrives before the due time', async () => {
    clock.set(0);
    const phone = newPhone();
    await say(phone, 0);
    clock.set(40);
    await say(phone, 40);
    const sweeper = extraSweeper();
    clock.set(61);
    expect(await sweeper.sweepNow()).toBe(0);
    const [s] = await sessionsOf(phone);
    expect(s.status).toBe('active');
    expect(new Date(s.due_at)).toEqual(at(100));

    clock.set(101);
    await sweeper.sweepNow();
    await sweeper.stop();
    // The worker's own sweeper may hold the row at this moment (SKIP LOCKED): ours then skips it
    // and the worker's pass commits the close a moment later.
    const ended = await waitFor(async () => (await sessionsOf(phone)).find((x) => x.status === 'ended'), 'the session to end');
    expect(new Date(ended.ended_at)).toEqual(at(100));
  });

  it('ends a closed session no earlier than its last message, even one dated a little ahead', async () => {
    const phone = newPhone();
    // A message a moment ago, then one 40 s ahead of this machine's clock (providers' clocks
    // differ; such a message is kept), within the channel's 60 s timeout: one session.
    const now = Math.floor(Date.now() / 1000) - T0;
    await say(phone, now - 10);
    const ahead = now + 40;
    await say(phone, ahead);
    const [s] = await sessionsOf(phone);
    expect(s.status).toBe('active');
    expect((await world.tenant.api('POST', `/sessions/${s.id}/close`, { reason: 'resolved' })).status).toBe(200);
    const [closed] = await sessionsOf(phone);
    expect(closed.status).toBe('ended');
    expect(new Date(closed.ended_at).getTime()).toBe(new Date(closed.last_activity_at).getTime());
    expect(new Date(closed.ended_at)).toEqual(at(ahead));
  });

  it('opens a new session for a message after the close', async () => {
    clock.set(0);
    const phone = newPhone();
    await say(phone, 0);
    clock.set(61);
    await waitFor(async () => (await sessionsOf(phone))[0].status === 'ended', 'the first session to end');
    await say(phone, 70);
    const all = await sessionsOf(phone);
    expect(all.map((x) => x.status)).toEqual(['ended', 'active']);
    expect(new Date(all[1].started_at)).toEqual(at(70));
    expect(await events(db, { aggregateId: all[1].id, type: 'session.started' })).toHaveLength(1);
  });

  it('closes a session that fell due while every process was down, once, when one starts', async () => {
    clock.set(0);
    const phone = newPhone();
    await say(phone, 0);
    const [s] = await sessionsOf(phone);
    await world.restart(() => clock.set(3600)); // due at 60, and nothing was running until 3600
    const ended = await waitFor(async () => (await sessionsOf(phone)).find((x) => x.status === 'ended'), 'the session to end after the restart');
    expect(new Date(ended.ended_at)).toEqual(at(60));
    const sweeper = extraSweeper();
    await sweeper.sweepNow();
    await sweeper.stop();
    expect(await events(db, { aggregateId: s.id, type: 'session.ended' })).toHaveLength(1);
  });

  it('never ends a session twice with several sweepers at once', async () => {
    clock.set(0);
    const n = 120;
    const ids = await seedDueSessions(n);
    const second = await world.startAnother(); // a second worker, with its own sweeper
    const sweepers = [extraSweeper(), extraSweeper(), extraSweeper()];
    clock.set(1000);
    const swept = await Promise.all(sweepers.map((s) => s.sweepNow()));
    await waitFor(async () => (await rows(db, `SELECT count(*)::int AS n FROM sessions WHERE id = ANY($1::uuid[]) AND status = 'active'`, [ids]))[0].n === 0, 'every seeded session to end');
    await Promise.all(sweepers.map((s) => s.stop()));
    await second.stop();
    expect(swept.reduce((a, b) => a + b, 0)).toBeLessThanOrEqual(n);
    const ended = await rows(db, `SELECT aggregate_id, count(*)::int AS n FROM outbox WHERE type = 'session.ended' AND aggregate_id = ANY($1::text[]) GROUP BY aggregate_id`, [ids]);
    expect(ended).toHaveLength(n);
    expect(ended.every((r) => r.n === 1)).toBe(true);
  });
});

/** Active sessions due at T0 + 30 s, written straight to the database. */
async function seedDueSessions(n: number): Promise<string[]> {
  const projectId = world.tenant.projectId;
  const contactIds = Array.from({ length: n }, () => uuidv7());
  const sessionIds = Array.from({ length: n }, () => uuidv7());
  const phones = contactIds.map((_, i) => `+5521${String(Date.now() % 100_000).padStart(5, '0')}${String(i).padStart(4, '0')}`);
  await db.query(`INSERT INTO contacts (id, project_id, phone, source) SELECT * FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[])`, [
    contactIds, contactIds.map(() => projectId), phones, contactIds.map(() => 'test'),
  ]);
  await db.query(
    `INSERT INTO sessions (id, project_id, contact_id, channel_id, started_at, last_activity_at, timeout_minutes, due_at, message_count, messages_from_contact)
     SELECT id, $2::uuid, contact_id, $3::uuid, $4::timestamptz, $4::timestamptz, 1, $5::timestamptz, 1, 1 FROM unnest($1::uuid[], $6::uuid[]) AS x (id, contact_id)`,
    [sessionIds, projectId, channel.id, at(-30), at(30), contactIds],
  );
  return sessionIds;
}

describe('session metrics', () => {
  it('counts 3 customer messages and 2 replies, the first response time and the customer wait', async () => {
    clock.set(0);
    const phone = newPhone();
    await say(phone, 0);
    await say(phone, 5);
    await say(phone, 30, { fromMe: true }); // replied 30 s after the first customer message
    await say(phone, 40);
    await say(phone, 70, { fromMe: true });
    const [s] = await sessionsOf(phone);
    expect(s).toMatchObject({ message_count: 5, messages_from_contact: 3, messages_from_agent: 2, first_response_seconds: 30 });

    clock.set(131);
    const ended = await waitFor(async () => (await sessionsOf(phone)).find((x) => x.status === 'ended'), 'the session to end');
    expect(ended.customer_wait_seconds).toBe(60); // 0 → 30, then 40 → 70
    const [e] = await events(db, { aggregateId: s.id, type: 'session.ended' });
    expect(e.data).toMatchObject({
      message_count: 5, messages_from_contact: 3, messages_from_agent: 2, first_response_seconds: 30, customer_wait_seconds: 60, duration_seconds: 130,
    });
    // session.ended → the contact's totals, through the contact-totals consumer.
    const contact = await waitFor(async () => (await rows(db, `SELECT * FROM contacts WHERE id = $1 AND ended_sessions > 0`, [s.contact_id]))[0], 'the contact totals');
    expect(contact.ended_sessions).toBe(1);
    expect(Number(contact.total_session_seconds)).toBe(130);
    expect(new Date(contact.last_session_ended_at)).toEqual(at(130));
  });
});

describe.each(brokerKinds())('the contact-totals consumer on the %s broker', (kind) => {
  it('acknowledges a malformed session.ended at once, with a warning, and leaves no dead letter', async () => {
    const c = await startLoneConsumer(kind, startContactTotalsConsumer);
    const messageId = uuidv7();
    // Retrying cannot make it an event: not one retry, not a dead letter whose replay fails again.
    await publishAndSettle(c, 'session.ended', Queues.contactTotals, { messageId, body: Buffer.from('{"type":"session.ended"'), headers: {} });
    expect(c.outcomes).toEqual([{ attempt: 1, acked: true }]);
    expect(await rows(c.db, 'SELECT id FROM dead_letters')).toEqual([]);
    expect(c.lines).toContainEqual(expect.objectContaining({ level: 40, consumer: 'contact-totals', message_id: messageId, reason: `message ${messageId} is not JSON` }));
  });
});

describe('the sessions_active gauge', () => {
  const active = async () => (await rows(db, `SELECT count(*)::int AS n FROM sessions WHERE status = 'active'`))[0].n as number;
  const gauge = async () => (await sessionsActive.get()).values[0]?.value;

  it('is read from the database when /metrics is scraped', async () => {
    clock.set(0);
    await say(newPhone(), 0);
    const r = await world.app.inject({ method: 'GET', url: '/metrics' });
    const shown = Number(/^sessions_active (\d+)$/m.exec(r.body)?.[1]);
    expect(shown).toBe(await active());
    expect(shown).toBeGreaterThan(0);
  });

  it('stays the database count when the API ends sessions another process opened (it went negative there)', async () => {
    clock.set(0);
    const refresh = makeSessionsGaugeRefresher(db, 0);
    const [a, b] = [newPhone(), newPhone()];
    await say(a, 0);
    await say(b, 0);
    await refresh();
    expect(await gauge()).toBe(await active());
    // This process's API ends two sessions; the processor of another process could have opened them.
    sessionsActive.set(0);
    const [sa] = await sessionsOf(a);
    expect((await world.tenant.api('POST', `/sessions/${sa.id}/close`, { reason: 'resolved' })).status).toBe(200);
    const [sb] = await sessionsOf(b);
    expect((await world.tenant.api('DELETE', `/contacts/${sb.contact_id}`)).status).toBe(204);
    expect(await gauge()).toBe(0); // nothing counted in the process
    await refresh();
    expect(await gauge()).toBe(await active());
  });
});

describe('POST /sessions/{id}/close', () => {
  it('ends the session now with the reason, emits session.ended once and cancels the timer', async () => {
    clock.set(0);
    const phone = newPhone();
    await say(phone, 0);
    const [s] = await sessionsOf(phone);
    const r = await world.tenant.api('POST', `/sessions/${s.id}/close`, { reason: 'resolved' });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ id: s.id, status: 'ended', end_reason: 'resolved' });

    const again = await world.tenant.api('POST', `/sessions/${s.id}/close`, { reason: 'spam' });
    expect(again.status).toBe(409);
    expect(again.json.code).toBe('already_ended');

    clock.set(500);
    const sweeper = extraSweeper();
    await sweeper.sweepNow();
    await sweeper.stop();
    const ended = await events(db, { aggregateId: s.id, type: 'session.ended' });
    expect(ended).toHaveLength(1);
    expect(ended[0].data).toMatchObject({ reason: 'resolved', messages_from_contact: 1 });
    expect(ended[0].data.closed_by).toMatch(/^api_key:/);
  });

  it('ends a session already past its due time at that time, with the reason given', async () => {
    // The sweeper's clock stays before the due time (as when the workers are stopped or behind),
    // while the API closes on the real clock, a year after these messages.
    clock.set(0);
    const phone = newPhone();
    await say(phone, 0);
    await say(phone, 20);
    const [s] = await sessionsOf(phone);
    expect(new Date(s.due_at)).toEqual(at(80));
    const r = await world.tenant.api('POST', `/sessions/${s.id}/close`, { reason: 'resolved' });
    expect(r.status).toBe(200);
    const [e] = await events(db, { aggregateId: s.id, type: 'session.ended' });
    // The contact's totals follow from session.ended (a consumer of the event).
    const c = await waitFor(async () => (await rows(db, 'SELECT total_session_seconds FROM contacts WHERE id = $1 AND ended_sessions > 0', [s.contact_id]))[0], 'the contact counted');
    // Before: ended "now", a year of duration on the session and on the contact.
    expect({ endedAt: r.json.ended_at, reason: r.json.end_reason, duration: r.json.duration_seconds, event: e.data.duration_seconds, contact: Number(c.total_session_seconds) })
      .toEqual({ endedAt: at(80).toISOString(), reason: 'resolved', duration: 80, event: 80, contact: 80 });

    // A message dated after that end is a conversation of its own.
    await say(phone, 200);
    expect((await sessionsOf(phone)).map((x) => x.status)).toEqual(['ended', 'active']);
  });

  it("answers 404 for another project's session and 400 for an unknown reason", async () => {
    clock.set(0);
    const phone = newPhone();
    await say(phone, 0);
    const [s] = await sessionsOf(phone);
    const other = await world.register();
    expect((await other.api('POST', `/sessions/${s.id}/close`, { reason: 'resolved' })).status).toBe(404);
    expect((await world.tenant.api('POST', `/sessions/${s.id}/close`, { reason: 'bored' })).status).toBe(400);
    expect((await sessionsOf(phone))[0].status).toBe('active');
  });
});
