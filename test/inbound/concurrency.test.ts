// Many messages of one new conversation processed at the same moment by competing processors
// must meet on one contact and one active session, with exact counters: the unique indexes and
// upserts decide, never a "look, then insert".
import { describe, expect, it } from 'vitest';
import { Queues } from '../../src/broker/topology.ts';
import type { Database } from '../../src/db/database.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { makeChannelDirectory } from '../../src/inbound/channel-directory.ts';
import { parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';
import { startInboundProcessor } from '../../src/inbound/processor.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { makeInboundService, type InboundChannel } from '../../src/services/inbound.service.ts';
import { makeTestBroker } from '../support/brokers.ts';
import { onCleanup, onServices, waitFor } from '../support/env.ts';
import { count, SECRET_KEY, startInbound, wahaText, type Inbound } from './harness.ts';

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

    for (let i = 0; i < 3; i++) {
      // Each its own database pool (services) and broker connection, like separate processes;
      // one webhook per transaction, so every message races every other.
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
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])) === 50, '50 messages stored', 60_000);
    await expectOneConversation(t, ch.id, `+${phone}`, 50);
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
