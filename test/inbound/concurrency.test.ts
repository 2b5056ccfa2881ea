// Many messages of one new conversation processed at the same moment by competing processors
// must meet on one contact and one active session, with exact counters: the unique indexes and
// upserts decide, never a "look, then insert".
import { describe, expect, it } from 'vitest';
import { Queues } from '../../src/broker/topology.ts';
import type { Database } from '../../src/db/database.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { endDueSessions } from '../../src/db/session-lifecycle.sql.ts';
import { makeChannelDirectory } from '../../src/inbound/channel-directory.ts';
import { parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';
import { startInboundProcessor } from '../../src/inbound/processor.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { makeInboundService, type InboundChannel } from '../../src/services/inbound.service.ts';
import { makeTestBroker } from '../support/brokers.ts';
import { cleanUpAfterEachTest, onCleanup, onServices, waitFor } from '../support/env.ts';
import { gatedDatabase, holdTransaction, waitUntilBlockedBy } from '../support/held.ts';
import { count, SECRET_KEY, startInbound, wahaText, type Inbound } from './harness.ts';

cleanUpAfterEachTest();

async function expectOneConversation(t: Inbound, channelId: string, phone: string, n: number) {
  const contacts = (await t.db.query('SELECT * FROM contacts WHERE project_id = $1 AND phone = $2', [t.projectId, phone])).rows;
  expect(contacts).toHaveLength(1);
  const c = contacts[0];
  expect(c).toMatchObject({ total_messages: n, total_sessions: 1 });
  const sessions = (await t.db.query('SELECT * FROM sessions WHERE contact_id = $1', [c.id])).rows;
  expect(sessions).toHaveLength(1);
  expect(sessions[0]).toMatchObject({ status: 'active', channel_id: channelId, message_count: n, messages_from_contact: n, messages_from_agent: 0 });
  expect(await count(t.db, 'SELECT 1 FROM messages WHERE contact_id = $1 AND session_id = $2', [c.id, sessions[0].id])).toBe(n);
  const events = (await t.db.query(
    `SELECT type, count(*)::int AS n FROM outbox
     WHERE (type = 'contact.created' AND aggregate_id = $1) OR (type = 'session.started' AND aggregate_id = $2)
        OR (type = 'message.received' AND data->>'contact_id' = $1)
     GROUP BY type ORDER BY type`,
    [c.id, sessions[0].id],
  )).rows;
  expect(events).toEqual([
    { type: 'contact.created', n: 1 },
    { type: 'message.received', n },
    { type: 'session.started', n: 1 },
  ]);
}

/**
 * Processors racing for the raw queue: each its own database pool (services) and broker
 * connection, like separate processes; one webhook per transaction, so every message races every
 * other.
 */
async function startProcessors(t: Inbound, n: number): Promise<void> {
  for (let i = 0; i < n; i++) {
    let db: Database = t.db;
    if (onServices) {
      db = connectPostgres({ url: t.dbUrl!, max: 10 });
      onCleanup(() => db.close());
    }
    const broker = await makeTestBroker(t.brokerKind, db, { namespace: t.broker.namespace });
    const channels = makeChannelDirectory({ db, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger });
    const processor = await startInboundProcessor({ db, broker, logger: silentLogger, channels }, { maxBatch: 1, maxInflight: 8, concurrency: 20 });
    onCleanup(() => processor.stop());
  }
}

/** A world without processors, and a function that applies one WAHA body in its own transaction. */
async function straightToTheService() {
  const t = await startInbound({ role: 'api' });
  const ch = await t.createChannel();
  const service = makeInboundService({ db: t.db });
  const channel: InboundChannel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha', sessionTimeoutMinutes: 30 };
  const apply = (body: unknown) => service.apply(t.projectId, [{ channel, events: parseWahaEvent(body), receivedAt: new Date() }]);
  return { t, ch, apply };
}

describe('concurrent messages of one new number', () => {
  it('gives one contact, one active session, 50 messages and counters of 50 across 3 processors', async () => {
    const t = await startInbound({ role: 'api' });
    const ch = await t.createChannel();
    const phone = '5511944440001';
    // Accepted first, so the three processors find them all waiting and race for them; one after
    // another, so each is its own queue message (webhooks accepted together share one).
    for (let i = 0; i < 50; i++) expect((await t.post(ch, wahaText(phone, `mensagem ${i}`, { id: `RACE${String(i).padStart(4, '0')}` }))).status).toBe(200);
    expect((await t.broker.stats([Queues.inboundRaw]))[0].depth).toBe(50);

    await startProcessors(t, 3);
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])) === 50, '50 messages stored', 60_000);
    await expectOneConversation(t, ch.id, `+${phone}`, 50);
  });

  it('meets on one contact when a person comes by phone, by LID and by both at once across 3 processors', async () => {
    // A person known by phone alone and by LID alone (two contacts) writes again, some messages
    // naming the phone, some the LID, some both, taken at once by three processors: the first
    // naming both merges the LID-only contact into the phone's, once, and nothing is lost.
    const t = await startInbound({ role: 'api' });
    const ch = await t.createChannel();
    const phone = '5511944440088';
    const lid = '90000000006666';
    const now = Math.floor(Date.now() / 1000);
    const body = (i: number) => {
      const b = wahaText(phone, `m${i}`, { id: `TRIO${String(i).padStart(3, '0')}`, ts: now });
      if (i % 3 === 0) return b; // the phone alone
      b.payload.from = `${lid}@lid`;
      b.payload._data.Info.Chat = b.payload._data.Info.Sender = `${lid}@lid`;
      if (i % 3 === 2) b.payload._data.Info.SenderAlt = `${phone}@s.whatsapp.net`;
      return b;
    };
    // Known already by phone and by LID, as two contacts: the first message naming both merges them.
    const service = makeInboundService({ db: t.db });
    const channel: InboundChannel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha', sessionTimeoutMinutes: 30 };
    for (const i of [45, 46]) await service.apply(t.projectId, [{ channel, events: parseWahaEvent(body(i)), receivedAt: new Date() }]);
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE project_id = $1 AND (phone = $2 OR wa_lid = $3)', [t.projectId, `+${phone}`, `${lid}@lid`])).toBe(2);
    for (let i = 0; i < 45; i++) expect((await t.post(ch, body(i))).status).toBe(200);
    await startProcessors(t, 3);
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])) === 47, '47 messages stored', 60_000);
    const live = (await t.db.query(
      'SELECT * FROM contacts WHERE project_id = $1 AND deleted_at IS NULL AND (phone = $2 OR wa_lid = $3)', [t.projectId, `+${phone}`, `${lid}@lid`])).rows;
    expect(live).toHaveLength(1);
    expect(live[0]).toMatchObject({ phone: `+${phone}`, wa_lid: `${lid}@lid`, total_messages: 47, total_sessions: 2 });
    expect(await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1 AND contact_id = $2', [ch.id, live[0].id])).toBe(47);
    const sessions = (await t.db.query('SELECT status, end_reason, message_count FROM sessions WHERE channel_id = $1 ORDER BY status', [ch.id])).rows;
    // The two sessions the two contacts had: one ended for the merge, the other took the rest.
    expect(sessions.map((x) => [x.status, x.end_reason])).toEqual([['active', null], ['ended', 'contact_merged']]);
    expect(sessions.reduce((n, x) => n + x.message_count, 0)).toBe(47);
    expect(await count(t.db, `SELECT 1 FROM sessions WHERE channel_id = $1 AND contact_id <> $2`, [ch.id, live[0].id])).toBe(0);
    expect(await count(t.db, `SELECT 1 FROM outbox WHERE type = 'contact.merged' AND aggregate_id = $1`, [live[0].id])).toBe(1);
  });

  it('gives the same answer for 50 transactions started at once, by phone and by LID', async () => {
    const { t, ch, apply } = await straightToTheService();

    await Promise.all(Array.from({ length: 50 }, (_, i) => apply(wahaText('5511944440002', `m${i}`, { id: `TX${i}` }))));
    await expectOneConversation(t, ch.id, '+5511944440002', 50);

    // A sender known only by a LID meets on the LID-only contact in the same way.
    const lidBody = (i: number) => {
      const b = wahaText('5511900000000', `l${i}`, { id: `LIDTX${i}` });
      b.payload.from = '90000000008888@lid';
      b.payload._data.Info = { Chat: '90000000008888@lid', Sender: '90000000008888@lid', IsFromMe: false, ID: `LIDTX${i}` };
      return b;
    };
    await Promise.all(Array.from({ length: 30 }, (_, i) => apply(lidBody(i))));
    const lid = (await t.db.query(`SELECT * FROM contacts WHERE wa_lid = '90000000008888@lid'`)).rows;
    expect(lid).toHaveLength(1);
    expect(lid[0]).toMatchObject({ phone: null, total_messages: 30, total_sessions: 1 });
    expect(await count(t.db, 'SELECT 1 FROM sessions WHERE contact_id = $1', [lid[0].id])).toBe(1);

    // A new person whose messages come some with their LID and phone (GOWS SenderAlt), some with
    // the LID alone, all at once: one contact, holding both, and one session. (Only PostgreSQL runs
    // these transactions at the same time; PGlite's one connection takes them in turn.)
    const mixedBody = (i: number) => {
      const b = lidBody(i);
      b.payload.id = b.payload._data.Info.ID = `MIXTX${i}`;
      b.payload.from = b.payload._data.Info.Chat = b.payload._data.Info.Sender = '90000000007777@lid';
      if (i % 2 === 0) b.payload._data.Info.SenderAlt = '5511944440077@s.whatsapp.net';
      return b;
    };
    await Promise.all(Array.from({ length: 40 }, (_, i) => apply(mixedBody(i))));
    const mixed = (await t.db.query(`SELECT * FROM contacts WHERE wa_lid = '90000000007777@lid' OR phone = '+5511944440077'`)).rows;
    expect(mixed).toHaveLength(1);
    expect(mixed[0]).toMatchObject({ phone: '+5511944440077', wa_lid: '90000000007777@lid', total_messages: 40, total_sessions: 1 });
    expect(await count(t.db, 'SELECT 1 FROM sessions WHERE contact_id = $1', [mixed[0].id])).toBe(1);

    // The same message applied 10 times at once is stored once and counted once.
    const dup = wahaText('5511944440002', 'the same', { id: 'TXDUP' });
    const results = await Promise.allSettled(Array.from({ length: 10 }, () => apply(dup)));
    // A copy may lose the race after the winner's dedupe check; it rolls back (the processor
    // retries it, and then it reads as a duplicate).
    expect(results.filter((r) => r.status === 'fulfilled').length).toBeGreaterThanOrEqual(1);
    await apply(dup);
    expect(await count(t.db, `SELECT 1 FROM messages WHERE external_id = 'TXDUP'`)).toBe(1);
    await expectOneConversation(t, ch.id, '+5511944440002', 51);
  });

  // Two messages of one person an hour apart (a backlog after an outage), taken at the same moment
  // by two processors: the earlier opens a session due 30 minutes later, so the later one must
  // open a session of its own. Before the lock per phone, the later one checked for an overdue
  // session before waiting on the contact, found none, and after the earlier one committed
  // touched its session: one 90-minute session instead of two. Only PostgreSQL runs the two
  // transactions at once (PGlite's one connection takes them in turn, where this cannot happen).
  /** The earlier message's transaction stores, then waits to commit while the later one starts. */
  async function storedWhileTheFirstCommits(phone: string, t1: number, t2: number) {
    const { t, ch, apply } = await straightToTheService();
    const held = gatedDatabase(t.db);
    const channel: InboundChannel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha', sessionTimeoutMinutes: 30 };
    const first = makeInboundService({ db: held.db }).apply(t.projectId, [{ channel, events: parseWahaEvent(wahaText(phone, 'oi', { id: `${phone}A`, ts: t1 })), receivedAt: new Date() }]);
    const pid = await held.reached; // the first transaction stored, waiting to commit
    const second = apply(wahaText(phone, 'ainda aí?', { id: `${phone}B`, ts: t2 }));
    await waitUntilBlockedBy(t.db, pid, 'the second transaction waiting on the first');
    held.release();
    await Promise.all([first, second]);
    const sessions = (await t.db.query(
      `SELECT s.status, s.message_count, s.started_at, s.end_reason FROM sessions s JOIN contacts c ON c.id = s.contact_id
       WHERE c.phone = $1 ORDER BY s.started_at`, [`+${phone}`])).rows;
    return sessions.map((x) => ({ status: x.status, messages: x.message_count, started: new Date(x.started_at).getTime() / 1000, reason: x.end_reason }));
  }

  // Two messages of one person an hour apart (a backlog after an outage), taken at the same moment
  // by two processors: the earlier opens a session due 30 minutes later, so the later one must
  // open a session of its own. Before the lock per phone (migration 020), the later one checked
  // for an overdue session before waiting on the contact, found none, and after the earlier one
  // committed touched its session: one 90-minute session instead of two. Only PostgreSQL runs the
  // two transactions at once (PGlite's one connection takes them in turn, where this cannot happen).
  it.runIf(onServices)('opens a second session for a message an hour later stored while the first one commits', async () => {
    const t0 = 1764460800;
    // Before: one session, active, of 2 messages, from t0 to t0 + 1 h.
    expect(await storedWhileTheFirstCommits('5511944440004', t0, t0 + 3600)).toEqual([
      { status: 'ended', messages: 1, started: t0, reason: 'inactivity_timeout' },
      { status: 'active', messages: 1, started: t0 + 3600, reason: null },
    ]);
  });

  // Live messages share the lock and never wait for each other; one stored while an old message of
  // the same person is being stored still waits for it.
  it.runIf(onServices)('opens a second session for a message of now stored while an old one commits', async () => {
    const t0 = 1764460800;
    const now = Math.floor(Date.now() / 1000);
    expect(await storedWhileTheFirstCommits('5511944440005', t0, now)).toEqual([
      { status: 'ended', messages: 1, started: t0, reason: 'inactivity_timeout' },
      { status: 'active', messages: 1, started: now, reason: null },
    ]);
  });

  it('dates the session from its earliest message, whichever of them commits first', async () => {
    const { t, apply } = await straightToTheService();
    const t0 = 1764460800;
    // The later message is stored first (a backlog out of order, or the race above).
    await apply(wahaText('5511944440003', 'segunda', { id: 'ORDER2', ts: t0 + 10 }));
    await apply(wahaText('5511944440003', 'primeira', { id: 'ORDER1', ts: t0 }));
    const [session] = (await t.db.query(`SELECT s.* FROM sessions s JOIN contacts c ON c.id = s.contact_id WHERE c.phone = '+5511944440003'`)).rows;
    expect(session).toMatchObject({ message_count: 2 });
    expect(new Date(session.started_at).getTime()).toBe(t0 * 1000);
    expect(new Date(session.last_activity_at).getTime()).toBe((t0 + 10) * 1000);
    expect(new Date(session.first_contact_message_at).getTime()).toBe(t0 * 1000);
  });
});

/** A GOWS text of a person named by their LID, with their phone beside it (SenderAlt) or not. */
function byLid(lid: string, text: string, o: { id: string; ts: number; phone?: string }): any {
  const body = wahaText(o.phone ?? '5500000000000', text, { id: o.id, ts: o.ts });
  const info = body.payload._data.Info;
  body.payload.from = `${lid}@lid`;
  info.Chat = `${lid}@lid`;
  info.Sender = `${lid}@lid`;
  if (o.phone) info.SenderAlt = `${o.phone}@s.whatsapp.net`;
  return body;
}

// Three races found by reading the inbound transaction's SQL against PostgreSQL's locking rules
// (migration 024). Each holds one transaction open at the point that matters, starts the other,
// waits until it is blocked on a lock, then lets the first commit. PostgreSQL only: PGlite's one
// connection takes transactions in turn.
describe.runIf(onServices)('the inbound transaction against a transaction holding what it needs', () => {
  const sessionsOf = async (t: Inbound, where: string, param: string) =>
    (await t.db.query(
      `SELECT s.status, s.message_count, s.started_at, s.end_reason FROM sessions s JOIN contacts c ON c.id = s.contact_id
       WHERE ${where} ORDER BY s.started_at`, [param])).rows.map((x) => ({ status: x.status, messages: x.message_count, started: new Date(x.started_at).getTime() / 1000, reason: x.end_reason }));

  it("waits for a message of the phone being stored when a message names only the LID of that phone's contact", async () => {
    const { t, ch, apply } = await straightToTheService();
    const [phone, lid] = ['5511944440006', '90000000000606'];
    const t0 = 1764460800;
    // The contact knows both; its first conversation was closed by hand: no session is active.
    await apply(byLid(lid, 'oi', { id: 'LIDPH0', ts: t0 - 3 * 3600, phone }));
    const [first] = (await t.db.query(`SELECT s.id FROM sessions s JOIN contacts c ON c.id = s.contact_id WHERE c.phone = $1`, [`+${phone}`])).rows;
    expect((await t.api('POST', `/sessions/${first.id}/close`, { reason: 'resolved' })).status).toBe(200);
    // An old message by the LID alone opens a session at t0 (due 30 minutes later) and waits to
    // commit; a message by the phone alone, an hour later, is stored meanwhile.
    const slow = gatedDatabase(t.db);
    const channel: InboundChannel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha', sessionTimeoutMinutes: 30 };
    const old = makeInboundService({ db: slow.db }).apply(t.projectId, [{ channel, events: parseWahaEvent(byLid(lid, 'antiga', { id: 'LIDPH1', ts: t0 })), receivedAt: new Date() }]);
    const pid = await slow.reached; // the LID message stored, waiting to commit
    const later = apply(wahaText(phone, 'e agora?', { id: 'LIDPH2', ts: t0 + 3600 }));
    await waitUntilBlockedBy(t.db, pid, 'the phone message waiting on the LID message');
    slow.release();
    await Promise.all([old, later]);
    // Before: the phone message extended the LID message's session (one session from t0 to t0 + 1 h).
    expect(await sessionsOf(t, 'c.phone = $1', `+${phone}`)).toEqual([
      { status: 'ended', messages: 1, started: t0 - 3 * 3600, reason: 'resolved' },
      { status: 'ended', messages: 1, started: t0, reason: 'inactivity_timeout' },
      { status: 'active', messages: 1, started: t0 + 3600, reason: null },
    ]);
  });

  it('counts a message in its session when the sweeper is ending that session at the same moment, instead of opening a second one beside it', async () => {
    const { t, apply } = await straightToTheService();
    const phone = '5511944440007';
    const t0 = 1764460800;
    await apply(wahaText(phone, 'oi', { id: 'SWEEP0', ts: t0 }));
    // The sweeper ends the session at its due time (t0 + 30 min) and has not committed yet.
    const sweeper = holdTransaction(t.db, async (tx) => expect(await endDueSessions(tx, new Date((t0 + 31 * 60) * 1000), 10)).toHaveLength(1));
    const pid = await sweeper.pid; // the sweeper waiting to commit
    // A message of ten minutes in, processed late, meanwhile.
    const late = apply(wahaText(phone, 'ainda estou aqui', { id: 'SWEEP1', ts: t0 + 600 }));
    await waitUntilBlockedBy(t.db, pid, 'the message waiting on the sweeper');
    sweeper.release();
    await Promise.all([sweeper.done, late]);
    // Before: a second session from t0 + 10 min beside the ended one (overlapping it), active.
    expect(await sessionsOf(t, 'c.phone = $1', `+${phone}`)).toEqual([{ status: 'ended', messages: 2, started: t0, reason: 'inactivity_timeout' }]);
  });

  it('takes the messages two batches of acks name in one order, so they wait for each other instead of deadlocking', async () => {
    const { t, ch } = await straightToTheService();
    const phone = '5511944440009';
    const channel: InboundChannel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha', sessionTimeoutMinutes: 30 };
    const ours = (id: string) => wahaText(phone, `nossa ${id}`, { id: `true_${phone}@c.us_${id}`, fromMe: true, event: 'message.any' });
    const ack = (id: string, code: number) => ({
      event: 'message.ack', session: 'loja-principal', timestamp: 1764460900000, me: { id: '5511900000000@c.us' },
      payload: { id: `true_${phone}@c.us_${id}`, from: `${phone}@c.us`, to: '5511900000000@c.us', fromMe: true, ack: code },
    });
    const items = (...bodies: unknown[]) => bodies.map((b) => ({ channel, events: parseWahaEvent(b), receivedAt: new Date() }));
    const service = makeInboundService({ db: t.db });
    await service.apply(t.projectId, items(ours('ACKA'), ours('ACKB')));
    // The first batch acks A then B, and stops after locking A until the second is waiting.
    const slow = gatedDatabase(t.db, (sql) => /FROM messages\s+WHERE channel_id = \$1 AND external_key = \$2 FOR UPDATE/.test(sql));
    const first = makeInboundService({ db: slow.db }).apply(t.projectId, items(ack('ACKA', 2), ack('ACKB', 2)));
    const pid = await slow.reached; // the first batch holding message A
    // The second acks B then A (arrival order); before, it locked B and waited for A: a deadlock
    // once the first went on to B. Either way it waits on the first, which holds A.
    const second = service.apply(t.projectId, items(ack('ACKB', 3), ack('ACKA', 3)));
    await waitUntilBlockedBy(t.db, pid, 'the second batch waiting');
    slow.release();
    await expect(Promise.all([first, second])).resolves.toBeDefined();
    const statuses = (await t.db.query(`SELECT external_key, status FROM messages WHERE channel_id = $1 ORDER BY external_key`, [ch.id])).rows;
    expect(statuses).toEqual([{ external_key: 'ACKA', status: 'read' }, { external_key: 'ACKB', status: 'read' }]);
  });

  it('does not count a message by LID on a contact deleted while it was being stored: it starts a new contact', async () => {
    const { t, apply } = await straightToTheService();
    const lid = '90000000000808';
    await apply(byLid(lid, 'oi', { id: 'LIDDEL0', ts: 1764460800 }));
    const [gone] = (await t.db.query(`SELECT id FROM contacts WHERE wa_lid = $1`, [`${lid}@lid`])).rows;
    const deletion = holdTransaction(t.db, (tx) => tx.query(`UPDATE contacts SET deleted_at = now() WHERE id = $1`, [gone.id]));
    const pid = await deletion.pid; // the deletion waiting to commit
    const next = apply(byLid(lid, 'de novo', { id: 'LIDDEL1', ts: 1764460900 }));
    await waitUntilBlockedBy(t.db, pid, 'the message waiting on the deletion');
    deletion.release();
    await Promise.all([deletion.done, next]);
    const contacts = (await t.db.query(`SELECT id, deleted_at, total_messages FROM contacts WHERE wa_lid = $1 ORDER BY created_at`, [`${lid}@lid`])).rows;
    // Before: one contact, deleted, with both messages.
    expect(contacts.map((c) => ({ deleted: c.deleted_at !== null, messages: c.total_messages }))).toEqual([{ deleted: true, messages: 1 }, { deleted: false, messages: 1 }]);
    const [m] = (await t.db.query(`SELECT contact_id FROM messages WHERE external_id = 'LIDDEL1'`)).rows;
    expect(m.contact_id).toBe(contacts[1].id);
  });
});
