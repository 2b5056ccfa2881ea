// The cases providers.md warns about, each through the real ingress: LIDs with and without a phone
// (and the phone turning up later), device suffixes, the same message twice under two events and
// two id forms, an ack that overtakes its message, repeated webhooks, push names a person already
// overrode, and repeated ad clicks.
import { beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { addEndedSessionToContact } from '../../src/db/session-lifecycle.sql.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';
import { makeInboundService } from '../../src/services/inbound.service.ts';
import { contactOf, count, eventTypes, fixture, inboundCount, messageByKey, startInbound, wahaText, type Channel, type Inbound } from './harness.ts';

let t: Inbound;

beforeAll(async () => {
  // An ack that overtook its message waits in its retries until the test posts the message: a
  // schedule long enough to outlive that on a loaded machine (200, 400, 800 and 1600 ms ran out
  // in 3 s).
  t = await startInbound({ retryDelaysMs: [200, 500, 1000, 2000, 4000, 8000, 15000] });
});

const stored = (ch: Channel, key: string) => waitFor(() => messageByKey(t.db, ch.id, key), `message ${key} stored`);

/** A GOWS message whose chat is a LID, with the phone in SenderAlt when given. */
function lidMessage(lid: string, id: string, phone?: string, ts?: number) {
  const body = wahaText('5511900000000', 'mensagem', { id, ...(ts === undefined ? {} : { ts }) });
  body.payload.from = `${lid}@lid`;
  body.payload._data.Info = { Chat: `${lid}@lid`, Sender: `${lid}@lid`, ...(phone ? { SenderAlt: `${phone}@s.whatsapp.net` } : {}), IsFromMe: false, ID: id, PushName: 'Pessoa LID' };
  return body;
}

describe('addresses', () => {
  it('keys a LID-only sender by its LID, then joins it to its phone when the phone turns up', async () => {
    const ch = await t.createChannel();
    await t.post(ch, lidMessage('90000000007001', 'LIDONLY01'));
    const first = await stored(ch, 'LIDONLY01');
    const lidContact = await contactOf(t.db, first.contact_id);
    expect(lidContact).toMatchObject({ phone: null, wa_id: null, wa_lid: '90000000007001@lid' });

    await t.post(ch, lidMessage('90000000007001', 'LIDPHONE02', '5511977770001'));
    const second = await stored(ch, 'LIDPHONE02');
    expect(second.contact_id).toBe(first.contact_id);
    expect(await contactOf(t.db, first.contact_id)).toMatchObject({ phone: '+5511977770001', wa_id: '5511977770001', wa_lid: '90000000007001@lid', total_messages: 2 });
    expect(second.session_id).toBe(first.session_id);
    expect(await eventTypes(t.db, first.contact_id)).toEqual(['contact.created', 'contact.updated']);

    // Later messages by phone alone, or by LID alone, find the same person.
    await t.post(ch, wahaText('5511977770001', 'pelo telefone', { id: 'LIDPHONE03' }));
    await t.post(ch, lidMessage('90000000007001', 'LIDONLY04'));
    expect((await stored(ch, 'LIDPHONE03')).contact_id).toBe(first.contact_id);
    expect((await stored(ch, 'LIDONLY04')).contact_id).toBe(first.contact_id);
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE project_id = $1 AND (wa_lid = $2 OR phone = $3)', [t.projectId, '90000000007001@lid', '+5511977770001'])).toBe(1);
  });

  it('merges a contact known by its LID alone into the contact its phone already has, when a message names both', async () => {
    const ch = await t.createChannel();
    const lid = '90000000007050';
    const phone = '5511977770050';
    const now = Math.floor(Date.now() / 1000);
    // The business knows the phone (a contact made through the API) and writes to it first.
    const a = await t.api('POST', '/contacts', { name: 'Maria Cliente', phone: `+${phone}`, tags: ['vip'], custom_fields: { plano: 'ouro' } });
    expect(a.status).toBe(201);
    const phoneContact = a.json.id as string;
    await t.post(ch, wahaText(phone, 'Olá Maria, aqui é a loja', { id: 'LIDM00', fromMe: true, event: 'message.any', ts: now - 40 }));
    const opener = await stored(ch, 'LIDM00');
    expect(opener.contact_id).toBe(phoneContact);
    // She answers, and WhatsApp shows only her LID: a contact of its own, with its own session.
    await t.post(ch, lidMessage(lid, 'LIDM01', undefined, now - 30));
    await t.post(ch, lidMessage(lid, 'LIDM02', undefined, now - 20));
    const lidOnly = (await stored(ch, 'LIDM01')).contact_id as string;
    expect((await stored(ch, 'LIDM02')).contact_id).toBe(lidOnly);
    expect(lidOnly).not.toBe(phoneContact);
    const lidSession = (await stored(ch, 'LIDM02')).session_id;
    // Both have places in pipelines: the phone's contact in the first, the LID-only one in both.
    const pipeline = async (name: string, statuses: string[]) => {
      const r = await t.api('POST', '/pipelines', { name, statuses: statuses.map((n) => ({ name: n, kind: 'open' })) });
      expect(r.status).toBe(201);
      return r.json as { id: string; statuses: Array<{ id: string }> };
    };
    const sales = await pipeline(`Vendas ${lid}`, ['Novo', 'Proposta']);
    const support = await pipeline(`Suporte ${lid}`, ['Aberto']);
    const place = async (contact: string, p: { id: string; statuses: Array<{ id: string }> }, n: number) =>
      expect((await t.api('PUT', `/contacts/${contact}/pipeline-status`, { pipeline_id: p.id, status_id: p.statuses[n].id })).status).toBe(200);
    await place(phoneContact, sales, 0);
    await place(lidOnly, sales, 1);
    await place(lidOnly, support, 0);

    // A message that names both: one person, one contact. (Where the outbox stands before it: the
    // two LID messages may have been stored in either order, so neither one's event marks it.)
    const before = (await t.db.query<{ seq: number }>('SELECT coalesce(max(seq), 0) AS seq FROM outbox WHERE project_id = $1', [t.projectId])).rows[0].seq;
    await t.post(ch, lidMessage(lid, 'LIDM03', phone, now - 10));
    const joined = await stored(ch, 'LIDM03');
    expect(joined.contact_id).toBe(phoneContact);
    // The conversation she was in goes on; the older one (only the opener) ended for the merge.
    expect(joined.session_id).toBe(lidSession);
    const sessions = (await t.db.query('SELECT id, contact_id, status, end_reason, message_count, messages_from_contact FROM sessions WHERE channel_id = $1 ORDER BY started_at', [ch.id])).rows;
    expect(sessions).toEqual([
      { id: opener.session_id, contact_id: phoneContact, status: 'ended', end_reason: 'contact_merged', message_count: 1, messages_from_contact: 0 },
      { id: lidSession, contact_id: phoneContact, status: 'active', end_reason: null, message_count: 3, messages_from_contact: 3 },
    ]);
    const messages = (await t.db.query('SELECT DISTINCT contact_id FROM messages WHERE channel_id = $1', [ch.id])).rows;
    expect(messages).toEqual([{ contact_id: phoneContact }]);
    expect(await contactOf(t.db, phoneContact)).toMatchObject({
      name: 'Maria Cliente', name_source: 'user', phone: `+${phone}`, wa_lid: `${lid}@lid`, tags: ['vip'], custom_fields: { plano: 'ouro' },
      total_messages: 4, total_sessions: 2, deleted_at: null,
    });
    expect(await contactOf(t.db, lidOnly)).toMatchObject({ merged_into: phoneContact, deleted_at: expect.any(Date) });
    const gone = await t.api('GET', `/contacts/${lidOnly}`);
    expect(gone.status).toBe(404);
    expect(gone.json).toMatchObject({ code: 'not_found', detail: `contact not found: it was merged into contact ${phoneContact}` });
    expect((await t.api('GET', `/contacts/${phoneContact}/messages`)).json.data).toHaveLength(4);
    // Its own place (and history) in the pipeline it was in; the LID-only one's in the other.
    const places = async (contact: string) => (await t.db.query('SELECT pipeline_id, status_id FROM contact_pipeline_statuses WHERE contact_id = $1', [contact])).rows;
    const moves = async (contact: string) => (await t.db.query('SELECT pipeline_id, to_status_id FROM contact_pipeline_history WHERE contact_id = $1 ORDER BY seq', [contact])).rows;
    expect(await places(phoneContact)).toEqual(expect.arrayContaining([
      { pipeline_id: sales.id, status_id: sales.statuses[0].id }, { pipeline_id: support.id, status_id: support.statuses[0].id },
    ]));
    expect(await places(phoneContact)).toHaveLength(2);
    expect(await moves(phoneContact)).toEqual([
      { pipeline_id: sales.id, to_status_id: sales.statuses[0].id }, { pipeline_id: support.id, to_status_id: support.statuses[0].id },
    ]);
    expect(await places(lidOnly)).toEqual([]);
    expect(await moves(lidOnly)).toEqual([{ pipeline_id: sales.id, to_status_id: sales.statuses[1].id }]);

    // What subscribers hear, in this order: the session that ended, the merge, the message.
    const events = (await t.db.query(
      `SELECT type, aggregate_id, data FROM outbox WHERE project_id = $1 AND seq > $2
       AND type IN ('session.ended', 'contact.merged', 'message.received') ORDER BY seq`, [t.projectId, before])).rows;
    expect(events.map((e) => [e.type, e.aggregate_id])).toEqual([
      ['session.ended', opener.session_id], ['contact.merged', phoneContact], ['message.received', joined.id],
    ]);
    expect(events[0].data).toMatchObject({ contact_id: phoneContact, reason: 'contact_merged' });
    expect(events[1].data).toMatchObject({ contact_id: phoneContact, merged_contact_id: lidOnly, name: 'Maria Cliente', phone: `+${phone}`, tags: ['vip'] });

    // The session.ended of the merge reaches the contact's totals (the contact-totals consumer), and
    // one that named the LID-only contact (ended just before the merge, consumed after it) goes
    // to the contact it was merged into.
    await withTransaction(t.db, (tx) => addEndedSessionToContact(tx, { projectId: t.projectId, contactId: lidOnly, durationSeconds: 60, endedAt: new Date() }), { projectId: t.projectId });
    await waitFor(async () => (await contactOf(t.db, phoneContact)).ended_sessions === 2, "both ended sessions on the phone's contact");
    expect((await contactOf(t.db, lidOnly)).ended_sessions).toBe(0);

    // Later, by LID alone or by phone alone: the same contact and conversation.
    await t.post(ch, lidMessage(lid, 'LIDM04', undefined, now - 5));
    expect(await stored(ch, 'LIDM04')).toMatchObject({ contact_id: phoneContact, session_id: lidSession });
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE project_id = $1 AND deleted_at IS NULL AND (wa_lid = $2 OR phone = $3)', [t.projectId, `${lid}@lid`, `+${phone}`])).toBe(1);
  });

  it('gives the merged contact what only the LID-only one knew: its push name and first ad', async () => {
    const ch = await t.createChannel();
    const lid = '90000000007051';
    const phone = '5511977770051';
    const now = Math.floor(Date.now() / 1000);
    const a = await t.api('POST', '/contacts', { phone: `+${phone}` });
    expect(a.status).toBe(201);
    const ad = lidMessage(lid, 'LIDAD01', undefined, now - 20);
    ad.payload._data.Message = structuredClone(fixture('gows-ad-referral').payload._data.Message);
    await t.post(ch, ad);
    const lidOnly = (await stored(ch, 'LIDAD01')).contact_id as string;
    await t.post(ch, lidMessage(lid, 'LIDAD02', phone, now - 10));
    expect((await stored(ch, 'LIDAD02')).contact_id).toBe(a.json.id);
    const merged = await contactOf(t.db, a.json.id);
    expect(merged).toMatchObject({ name: 'Pessoa LID', name_source: 'push', total_messages: 2, total_sessions: 1 });
    expect(merged.ad_attribution).toEqual((await contactOf(t.db, lidOnly)).ad_attribution);
    expect(merged.ad_attribution.source_id).toBe('120200000000000001');
    // No session on the phone's contact before: the LID-only one's moved over, nothing ended.
    expect(await count(t.db, `SELECT 1 FROM sessions WHERE channel_id = $1 AND status = 'active' AND contact_id = $2`, [ch.id, a.json.id])).toBe(1);
    expect(await count(t.db, `SELECT 1 FROM sessions WHERE channel_id = $1 AND status = 'ended'`, [ch.id])).toBe(0);
  });

  it('merges inside a batch, and stores what comes after the merge in the same transaction', async () => {
    const ch = await t.createChannel();
    const lid = '90000000007052';
    const phone = '5511977770052';
    const now = Math.floor(Date.now() / 1000);
    const service = makeInboundService({ db: t.db });
    const channel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha' as const, sessionTimeoutMinutes: 30 };
    const item = (body: unknown) => ({ channel, events: parseWahaEvent(body), receivedAt: new Date() });
    const a = await t.api('POST', '/contacts', { phone: `+${phone}` });
    expect(a.status).toBe(201);
    await service.apply(t.projectId, [item(lidMessage(lid, 'BATCH00', undefined, now - 30))]);
    const lidOnly = (await stored(ch, 'BATCH00')).contact_id;
    // Someone whose conversation went quiet an hour ago (due 30 minutes later, not ended yet).
    await service.apply(t.projectId, [item(wahaText('5511977770049', 'faz tempo', { id: 'BATCHQ0', ts: now - 3600 }))]);
    // One transaction, in the order it takes them: that person again (their session is overdue),
    // the message naming both LID and phone, a new person's, and one more by the LID alone.
    await service.apply(t.projectId, [
      item(lidMessage(lid, 'BATCH03', undefined, now - 10)),
      item(wahaText('5511977770053', 'outra pessoa', { id: 'BATCH02', ts: now - 20 })),
      item(lidMessage(lid, 'BATCH01', phone, now - 20)),
      item(wahaText('5511977770049', 'voltei', { id: 'BATCHQ1', ts: now - 15 })),
    ]);
    const quiet = await stored(ch, 'BATCHQ1');
    expect(quiet.session_id).not.toBe((await stored(ch, 'BATCHQ0')).session_id);
    for (const key of ['BATCH00', 'BATCH01', 'BATCH03']) expect((await stored(ch, key)).contact_id).toBe(a.json.id);
    const other = await stored(ch, 'BATCH02');
    expect(other.contact_id).not.toBe(a.json.id);
    expect(await contactOf(t.db, lidOnly)).toMatchObject({ merged_into: a.json.id });
    expect(await contactOf(t.db, a.json.id)).toMatchObject({ total_messages: 3, total_sessions: 1 });
    // The merge's event before the events of the batch's messages, all stored after it.
    const batch = [(await stored(ch, 'BATCH01')).id, other.id, (await stored(ch, 'BATCH03')).id];
    const order = (await t.db.query(
      `SELECT type FROM outbox WHERE project_id = $1
         AND ((type = 'contact.merged' AND aggregate_id = $2) OR (type = 'message.received' AND aggregate_id = ANY($3::text[])))
       ORDER BY seq`, [t.projectId, a.json.id, batch])).rows.map((e) => e.type);
    expect(order).toEqual(['contact.merged', 'message.received', 'message.received', 'message.received']);
  });

  it('uses the phone of a LID sender when the engine gives it, never the LID as a phone', async () => {
    const ch = await t.createChannel();
    await t.post(ch, fixture('noweb-lid-sender-pn'));
    const m = await stored(ch, '3EB0DEV000000NOWEB02');
    expect(await contactOf(t.db, m.contact_id)).toMatchObject({ phone: '+5511900000011', wa_lid: '90000000001111@lid' });
    const lidAsPhone = await count(t.db, `SELECT 1 FROM contacts WHERE phone LIKE '+9000000%'`);
    expect(lidAsPhone).toBe(0);
  });

  it('drops the device suffix of a JID', async () => {
    const ch = await t.createChannel();
    const body = wahaText('5511977770002', 'do computador', { id: 'DEVICE01' });
    body.payload.from = '5511977770002:17@s.whatsapp.net';
    body.payload._data.Info.Chat = '5511977770002:17@s.whatsapp.net';
    await t.post(ch, body);
    const m = await stored(ch, 'DEVICE01');
    expect((await contactOf(t.db, m.contact_id)).phone).toBe('+5511977770002');
  });

  it('takes the contact from the other party of our own messages', async () => {
    const ch = await t.createChannel();
    await t.post(ch, wahaText('5511977770003', 'resposta da loja', { id: 'OURS01', fromMe: true, event: 'message.any' }));
    const m = await stored(ch, 'OURS01');
    expect(m).toMatchObject({ from_me: true, direction: 'outbound', status: 'sent' });
    const c = await contactOf(t.db, m.contact_id);
    expect(c).toMatchObject({ phone: '+5511977770003', name: null });
    const s = (await t.db.query('SELECT * FROM sessions WHERE id = $1', [m.session_id])).rows[0];
    expect(s).toMatchObject({ message_count: 1, messages_from_contact: 0, messages_from_agent: 1 });
  });
});

describe('duplicates', () => {
  it('stores one message when `message` and `message.any` both deliver it, under either id form', async () => {
    const ch = await t.createChannel();
    const id = 'BOTH0000001';
    const asMessage = wahaText('5511977770010', 'duas vezes', { id: `false_5511977770010@c.us_${id}`, event: 'message' });
    const asAny = wahaText('5511977770010', 'duas vezes', { id, event: 'message.any' });
    const duplicates = async () => (await inboundCount({ event: 'message.any', result: 'duplicate' })) + (await inboundCount({ event: 'message', result: 'duplicate' }));
    const dupes = await duplicates();
    const [a, b] = await Promise.all([t.post(ch, asMessage), t.post(ch, asAny)]);
    expect([a.status, b.status]).toEqual([200, 200]);
    await waitFor(async () => (await duplicates()) > dupes, 'the second copy counted as a duplicate');
    expect(await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])).toBe(1);
    const m = await messageByKey(t.db, ch.id, id);
    expect((await t.db.query('SELECT message_count FROM sessions WHERE id = $1', [m.session_id])).rows[0].message_count).toBe(1);
    expect(await eventTypes(t.db, m.id)).toEqual(['message.received']);
  });

  it('changes nothing, not even counters, when the same webhook is posted 5 times', async () => {
    const ch = await t.createChannel();
    const body = wahaText('5511977770011', 'repetido', { id: 'REPEAT00001' });
    expect((await t.post(ch, body)).status).toBe(200);
    const m = await stored(ch, 'REPEAT00001');
    // What the inbound transaction writes (other consumers react to its events on their own rows).
    const snapshot = async () => ({
      contact: (await t.db.query(
        'SELECT name, phone, total_messages, total_sessions, first_interaction_at, last_interaction_at FROM contacts WHERE id = $1', [m.contact_id])).rows[0],
      session: (await t.db.query('SELECT * FROM sessions WHERE id = $1', [m.session_id])).rows[0],
      message: await messageByKey(t.db, ch.id, 'REPEAT00001'),
      events: (await t.db.query(
        `SELECT id, type FROM outbox WHERE project_id = $1 AND type IN ('contact.created', 'contact.updated', 'session.started', 'message.received', 'message.sent')
         ORDER BY seq`, [t.projectId])).rows,
    });
    const before = await snapshot();
    const dupes = await inboundCount({ event: 'message', result: 'duplicate' });
    for (let i = 0; i < 4; i++) expect((await t.post(ch, body)).status).toBe(200);
    await waitFor(async () => (await inboundCount({ event: 'message', result: 'duplicate' })) >= dupes + 4, '4 duplicates counted');
    expect(await snapshot()).toEqual(before);
    expect(before.session).toMatchObject({ message_count: 1, messages_from_contact: 1 });
    expect(before.contact.total_messages).toBe(1);
  });
});

describe('references that arrive before their message', () => {
  it('retries an ack that overtook its message, then applies it', async () => {
    const ch = await t.createChannel();
    const ack = fixture('ack-read');
    const missing = await inboundCount({ event: 'message.ack', result: 'missing_target' });
    expect((await t.post(ch, ack)).status).toBe(200);
    await waitFor(async () => (await inboundCount({ event: 'message.ack', result: 'missing_target' })) > missing, 'the ack found no message');
    await t.post(ch, fixture('gows-from-me-phone'));
    await waitFor(async () => (await messageByKey(t.db, ch.id, '3EB0DEV00000000OUT01'))?.status === 'read', 'the retried ack applied');
    const m = await messageByKey(t.db, ch.id, '3EB0DEV00000000OUT01');
    expect(await eventTypes(t.db, m.id)).toEqual(['message.sent', 'message.read']);
    expect(new Date(m.delivered_at).toISOString()).toBe('2025-11-30T00:08:00.000Z'); // read implies delivered
  });
});

describe('an ack that names us alone (GOWS, NOWEB: the chat in `from`, `to` null)', () => {
  const ack = (id: string) => {
    const body = fixture('ack-read');
    body.environment.engine = 'NOWEB';
    Object.assign(body.payload, { id: `true_5511900000000@c.us_${id}`, from: '5511900000000@c.us', to: null, ack: 3 });
    return body;
  };

  it('is skipped as our own chat when no message has its id: counted, not retried', async () => {
    const ch = await t.createChannel();
    const own = await inboundCount({ event: 'message.ack', result: 'own_chat' });
    const missing = await inboundCount({ event: 'message.ack', result: 'missing_target' });
    expect((await t.post(ch, ack('OWNCHAT01'))).status).toBe(200);
    await waitFor(async () => (await inboundCount({ event: 'message.ack', result: 'own_chat' })) > own, 'the ack skipped as own chat');
    expect(await inboundCount({ event: 'message.ack', result: 'missing_target' })).toBe(missing);
  });

  it('applies to its message when one is stored: a real ack is not lost', async () => {
    const ch = await t.createChannel();
    await t.post(ch, wahaText('5511977770060', 'olá', { id: 'NOTOWN01', fromMe: true, event: 'message.any' }));
    await stored(ch, 'NOTOWN01');
    await t.post(ch, ack('NOTOWN01'));
    await waitFor(async () => (await messageByKey(t.db, ch.id, 'NOTOWN01')).status === 'read', 'the ack applied');
  });
});

describe('delivery statuses', () => {
  const ack = (id: string, ack: number, ts: number) => ({
    event: 'message.ack', session: 'loja-principal', timestamp: ts * 1000, me: { id: '5511900000000@c.us' },
    payload: { id: `true_5511977770040@c.us_${id}`, from: '5511977770040@c.us', to: '5511900000000@c.us', fromMe: true, ack },
  });

  it('records a played voice note and a failed message, each with its event', async () => {
    const ch = await t.createChannel();
    await t.post(ch, wahaText('5511977770040', 'áudio', { id: 'PLAY01', fromMe: true, event: 'message.any' }));
    await t.post(ch, wahaText('5511977770040', 'não vai', { id: 'FAIL01', fromMe: true, event: 'message.any' }));
    await stored(ch, 'PLAY01');
    await stored(ch, 'FAIL01');
    await t.post(ch, ack('PLAY01', 4, 1764460900));
    await t.post(ch, ack('FAIL01', -1, 1764460910));
    await waitFor(async () => (await messageByKey(t.db, ch.id, 'PLAY01')).status === 'played', 'played');
    await waitFor(async () => (await messageByKey(t.db, ch.id, 'FAIL01')).status === 'failed', 'failed');
    const played = await messageByKey(t.db, ch.id, 'PLAY01');
    for (const col of ['delivered_at', 'read_at', 'played_at']) expect(new Date(played[col]).toISOString(), col).toBe('2025-11-30T00:01:40.000Z');
    expect(await eventTypes(t.db, played.id)).toEqual(['message.sent', 'message.played']);
    const failed = await messageByKey(t.db, ch.id, 'FAIL01');
    expect(new Date(failed.failed_at).toISOString()).toBe('2025-11-30T00:01:50.000Z');
    const e = (await t.db.query(`SELECT data FROM outbox WHERE aggregate_id = $1 AND type = 'message.failed'`, [failed.id])).rows[0].data;
    expect(e).toMatchObject({ status: 'failed', previous_status: 'sent', error: expect.any(String) });
    // Terminal: a late "read" does not revive it.
    await t.post(ch, ack('FAIL01', 3, 1764460920));
    const before = await inboundCount({ event: 'message.ack', result: 'unchanged' });
    await t.post(ch, ack('FAIL01', 3, 1764460930));
    await waitFor(async () => (await inboundCount({ event: 'message.ack', result: 'unchanged' })) > before, 'late read ignored');
    expect((await messageByKey(t.db, ch.id, 'FAIL01')).status).toBe('failed');
  });
});

describe('contact details', () => {
  it('lets a push name replace a push name, never a name a person set', async () => {
    const ch = await t.createChannel();
    const a = wahaText('5511977770020', 'oi', { id: 'PUSH0001' });
    await t.post(ch, a);
    const m = await stored(ch, 'PUSH0001');
    expect((await contactOf(t.db, m.contact_id)).name).toBe('Cliente Teste');

    const renamed = wahaText('5511977770020', 'mudei de nome', { id: 'PUSH0002' });
    renamed.payload._data.Info.PushName = 'Cliente Novo Nome';
    await t.post(ch, renamed);
    await stored(ch, 'PUSH0002');
    expect((await contactOf(t.db, m.contact_id)).name).toBe('Cliente Novo Nome');
    expect(await eventTypes(t.db, m.contact_id)).toEqual(['contact.created', 'contact.updated']);

    await t.db.query(`UPDATE contacts SET name = 'Nome do CRM', name_source = 'user' WHERE id = $1`, [m.contact_id]);
    const again = wahaText('5511977770020', 'outro nome', { id: 'PUSH0003' });
    again.payload._data.Info.PushName = 'Apelido';
    await t.post(ch, again);
    await stored(ch, 'PUSH0003');
    expect((await contactOf(t.db, m.contact_id)).name).toBe('Nome do CRM');
  });

  it('drops a blank push name (it changes nothing) and cuts an over-long one to what the API takes', async () => {
    const ch = await t.createChannel();
    await t.post(ch, wahaText('5511977770021', 'oi', { id: 'PUSHBLK01' }));
    const m = await stored(ch, 'PUSHBLK01');
    expect((await contactOf(t.db, m.contact_id)).name).toBe('Cliente Teste');

    const blank = wahaText('5511977770021', 'de novo', { id: 'PUSHBLK02' });
    blank.payload._data.Info.PushName = ' \u200B ';
    await t.post(ch, blank);
    const second = await stored(ch, 'PUSHBLK02');
    expect((await contactOf(t.db, m.contact_id)).name).toBe('Cliente Teste');
    expect(second.metadata.push_name).toBeUndefined();
    expect(await eventTypes(t.db, m.contact_id)).toEqual(['contact.created']);

    const long = wahaText('5511977770021', 'nome comprido', { id: 'PUSHBLK03' });
    long.payload._data.Info.PushName = `${'N'.repeat(199)}😀${'x'.repeat(50)}`;
    await t.post(ch, long);
    await stored(ch, 'PUSHBLK03');
    const c = await contactOf(t.db, m.contact_id);
    expect(c.name).toBe(`${'N'.repeat(199)}😀`);
    expect(await eventTypes(t.db, m.contact_id)).toEqual(['contact.created', 'contact.updated']);
    // A name the API itself would take (200 characters, the emoji whole).
    const patched = await t.api('PATCH', `/contacts/${m.contact_id}`, { name: c.name, tags: ['push'] });
    expect(patched.status, JSON.stringify(patched.json)).toBe(200);
  });

  it('keeps the first ad on the contact and records every ad on its message', async () => {
    const ch = await t.createChannel();
    const first = fixture('gows-ad-referral');
    await t.post(ch, first);
    const m1 = await stored(ch, '3EB0DEV00000000ADS01');
    const second = structuredClone(first);
    second.payload.id = 'false_5511900000003@c.us_3EB0DEV00000000ADS02';
    second.payload._data.Info.ID = '3EB0DEV00000000ADS02';
    second.payload._data.Message.extendedTextMessage.contextInfo.externalAdReply.sourceID = '120200000000000099';
    await t.post(ch, second);
    const m2 = await stored(ch, '3EB0DEV00000000ADS02');
    expect(m1.ad_attribution.source_id).toBe('120200000000000001');
    expect(m2.ad_attribution.source_id).toBe('120200000000000099');
    expect((await contactOf(t.db, m1.contact_id)).ad_attribution.source_id).toBe('120200000000000001');
    const clicks = await t.db.query(`SELECT data FROM outbox WHERE type = 'tracking.ad_click' AND aggregate_id = $1 ORDER BY seq`, [m1.contact_id]);
    expect(clicks.rows.map((r) => [r.data.source_id, r.data.message_id])).toEqual([['120200000000000001', m1.id], ['120200000000000099', m2.id]]);
    expect(clicks.rows[0].data).toMatchObject({ source_type: 'ad', ctwa_clid: 'FAKE-CTWA-CLID-0001', headline: 'BLACK FRIDAY LOJA EXEMPLO', image_url: 'https://www.instagram.com/p/FAKEPOST01/' });
  });
});

describe('sessions', () => {
  const T = 1764460800; // 2025-11-30T00:00:00Z

  it('ends a session that fell due before the next message (the sweeper had not yet) and opens a new one', async () => {
    const ch = await t.createChannel();
    await t.post(ch, wahaText('5511977770030', 'primeira', { id: 'GAP01', ts: T }));
    const first = await stored(ch, 'GAP01');
    await t.post(ch, wahaText('5511977770030', 'meia hora depois', { id: 'GAP02', ts: T + 31 * 60 }));
    const second = await stored(ch, 'GAP02');
    expect(second.session_id).not.toBe(first.session_id);
    const old = (await t.db.query('SELECT * FROM sessions WHERE id = $1', [first.session_id])).rows[0];
    expect(old).toMatchObject({ status: 'ended', end_reason: 'inactivity_timeout', message_count: 1 });
    expect(new Date(old.ended_at).toISOString()).toBe('2025-11-30T00:30:00.000Z');
    expect(await eventTypes(t.db, first.session_id)).toEqual(['session.started']);
    const ended = await t.db.query(`SELECT data FROM outbox WHERE type = 'session.ended' AND aggregate_id = $1`, [first.session_id]);
    expect(ended.rows).toHaveLength(1);
    expect((await contactOf(t.db, first.contact_id)).total_sessions).toBe(2);
  });

  it('takes a message dated hours ahead of its arrival as sent when it arrived, so it neither ends the session nor holds it open', async () => {
    const ch = await t.createChannel();
    const channel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha' as const, sessionTimeoutMinutes: 30 };
    const service = makeInboundService({ db: t.db });
    const item = (id: string, ts: number, arrived: number, fromMe = false) =>
      ({ channel, events: parseWahaEvent(wahaText('5511977770032', id, { id, ts, fromMe })), receivedAt: new Date(arrived * 1000) });
    await service.apply(t.projectId, [item('AHEAD01', T, T)]);
    // Our own reply from a phone whose clock is three hours fast, arriving ten minutes later.
    await service.apply(t.projectId, [item('AHEAD02', T + 3 * 3600, T + 600, true)]);
    // A skew of a minute is believed.
    await service.apply(t.projectId, [item('AHEAD03', T + 1260, T + 1200)]);
    const rows = (await t.db.query(
      `SELECT m.external_id, m."timestamp", m.session_id FROM messages m WHERE m.channel_id = $1 ORDER BY m."timestamp"`, [ch.id])).rows;
    expect(rows.map((r) => [r.external_id, new Date(r.timestamp).toISOString()])).toEqual([
      ['AHEAD01', '2025-11-30T00:00:00.000Z'],
      ['AHEAD02', '2025-11-30T00:10:00.000Z'],
      ['AHEAD03', '2025-11-30T00:21:00.000Z'],
    ]);
    expect(new Set(rows.map((r) => r.session_id)).size).toBe(1);
    const session = (await t.db.query('SELECT * FROM sessions WHERE id = $1', [rows[0].session_id])).rows[0];
    expect(session).toMatchObject({ status: 'active', message_count: 3, messages_from_agent: 1 });
    expect(new Date(session.last_activity_at).toISOString()).toBe('2025-11-30T00:21:00.000Z');
    expect(new Date(session.due_at).toISOString()).toBe('2025-11-30T00:51:00.000Z');
  });

  describe('a message that arrives after its session', () => {
    const at = (s: number) => new Date(s * 1000).toISOString();
    async function world(phone: string) {
      const ch = await t.createChannel();
      const channel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha' as const, sessionTimeoutMinutes: 30 };
      const service = makeInboundService({ db: t.db });
      const send = (...msgs: Array<[id: string, ts: number]>) =>
        service.apply(t.projectId, msgs.map(([id, ts]) => ({ channel, events: parseWahaEvent(wahaText(phone, id, { id, ts })), receivedAt: new Date() })));
      const sessions = async () => (await t.db.query(
        `SELECT s.*, array(SELECT m.external_id FROM messages m WHERE m.session_id = s.id ORDER BY m."timestamp") AS msgs
         FROM sessions s WHERE s.channel_id = $1 ORDER BY s.started_at`, [ch.id])).rows;
      const sessionEvents = async () => (await t.db.query(
        `SELECT o.type, o.aggregate_id::text AS session, o.data FROM outbox o JOIN sessions s ON s.id::text = o.aggregate_id::text
         WHERE s.channel_id = $1 AND o.type LIKE 'session.%' ORDER BY o.id`, [ch.id])).rows;
      return { ch, send, sessions, sessionEvents };
    }

    it('is counted in the ended session its time falls in, which sends nothing again', async () => {
      const w = await world('5511977771040');
      await w.send(['LATE01', T]);
      const [first] = await w.sessions();
      expect((await t.api('POST', `/sessions/${first.id}/close`, { reason: 'resolved' })).status).toBe(200);
      // Five minutes after the first message, delivered after the session was closed (a retry, a drained spill).
      await w.send(['LATE02', T + 300]);
      const rows = await w.sessions();
      expect(rows).toHaveLength(1);
      expect(rows[0]).toMatchObject({ id: first.id, status: 'ended', end_reason: 'resolved', message_count: 2, messages_from_contact: 2, msgs: ['LATE01', 'LATE02'] });
      expect(new Date(rows[0].last_activity_at).toISOString()).toBe(at(T + 300));
      expect((await w.sessionEvents()).map((e) => e.type)).toEqual(['session.started', 'session.ended']);
      expect(await contactOf(t.db, rows[0].contact_id)).toMatchObject({ total_sessions: 1, total_messages: 2 });
    });

    it('goes to the ended session it belongs to, not to the newer active one, whose start stays', async () => {
      const w = await world('5511977771041');
      await w.send(['OLD01', T]);
      await w.send(['NEW01', T + 3 * 3600]); // ends the first session (overdue) and opens the second
      const contactId = (await w.sessions())[0].contact_id;
      await waitFor(async () => (await contactOf(t.db, contactId)).ended_sessions === 1 || undefined, 'the ended session counted on the contact');
      await w.send(['OLD02', T + 600]); // ten minutes into the first conversation, delivered last
      const rows = await w.sessions();
      expect(rows.map((r) => [r.status, at(new Date(r.started_at).getTime() / 1000), r.message_count, r.msgs])).toEqual([
        ['ended', at(T), 2, ['OLD01', 'OLD02']],
        ['active', at(T + 3 * 3600), 1, ['NEW01']],
      ]);
      // Ended for inactivity, it would have lasted until that message plus the timeout.
      expect(new Date(rows[0].ended_at).toISOString()).toBe(at(T + 600 + 1800));
      expect(Number((await contactOf(t.db, contactId)).total_session_seconds)).toBe(1800 + 600);
      expect(new Date(rows[1].due_at).toISOString()).toBe(at(T + 3 * 3600 + 1800));
      expect((await w.sessionEvents()).map((e) => e.type)).toEqual(['session.started', 'session.ended', 'session.started']);
    });

    it('that no session holds, older than the active one, gets a session of its own that has ended', async () => {
      const w = await world('5511977771042');
      await w.send(['NOW01', T + 3 * 3600]);
      // A backlog processed out of order: two messages of a conversation three hours earlier.
      await w.send(['BACK01', T], ['BACK02', T + 120]);
      const rows = await w.sessions();
      expect(rows.map((r) => [r.status, at(new Date(r.started_at).getTime() / 1000), r.message_count, r.msgs])).toEqual([
        ['ended', at(T), 2, ['BACK01', 'BACK02']],
        ['active', at(T + 3 * 3600), 1, ['NOW01']],
      ]);
      expect(rows[0]).toMatchObject({ end_reason: 'inactivity_timeout', due_at: null });
      expect(new Date(rows[0].ended_at).toISOString()).toBe(at(T + 120 + 1800));
      const events = await w.sessionEvents();
      expect(events.map((e) => [e.type, e.session])).toEqual([
        ['session.started', rows[1].id],
        ['session.started', rows[0].id],
        ['session.ended', rows[0].id],
      ]);
      // Its end is sent once the whole batch is counted in it.
      expect(events[2].data).toMatchObject({ reason: 'inactivity_timeout', message_count: 2, started_at: at(T), ended_at: at(T + 1920), duration_seconds: 1920 });
      const contactId = rows[0].contact_id;
      await waitFor(async () => (await contactOf(t.db, contactId)).ended_sessions === 1 || undefined, 'the ended session counted on the contact');
      const c = await contactOf(t.db, contactId);
      expect([c.total_sessions, Number(c.total_session_seconds)]).toEqual([2, 1920]);
    });

    it('goes to the nearest of two ended sessions it comes shortly before, never stretching the later one over the earlier', async () => {
      const w = await world('5511977771045');
      await w.send(['NEAR01', T]);
      const [first] = await w.sessions();
      expect((await t.api('POST', `/sessions/${first.id}/close`, { reason: 'resolved' })).status).toBe(200);
      await t.db.query('UPDATE sessions SET ended_at = $2 WHERE id = $1', [first.id, new Date((T + 300) * 1000)]); // as if closed at T + 5 min
      await w.send(['NEAR02', T + 600]); // a new conversation, ended by the next one's arrival
      await w.send(['NEAR03', T + 3 * 3600]);
      await w.send(['NEAR00', T - 600]); // a retry of a message ten minutes before the first
      const rows = await w.sessions();
      expect(rows.map((r) => [r.status, at(new Date(r.started_at).getTime() / 1000), r.msgs])).toEqual([
        ['ended', at(T - 600), ['NEAR00', 'NEAR01']],
        ['ended', at(T + 600), ['NEAR02']],
        ['active', at(T + 3 * 3600), ['NEAR03']],
      ]);
    });

    it('opens no active session for late messages older than an ended one: they get an ended one that stops where the later begins', async () => {
      const w = await world('5511977771046');
      await w.send(['DRAIN10', T + 3600]);
      await w.send(['DRAIN20', T + 5 * 3600]); // ends the first (overdue, at T + 90 min)
      const active = (await w.sessions()).find((r) => r.status === 'active')!;
      expect((await t.api('POST', `/sessions/${active.id}/close`, { reason: 'resolved' })).status).toBe(200);
      // Spilled webhooks from before both, drained in one batch: no session is active now.
      await w.send(['DRAIN01', T], ['DRAIN02', T + 1200], ['DRAIN03', T + 2700]);
      const rows = await w.sessions();
      expect(rows.map((r) => [r.status, at(new Date(r.started_at).getTime() / 1000), at(new Date(r.ended_at).getTime() / 1000), r.msgs])).toEqual([
        ['ended', at(T), at(T + 3600), ['DRAIN01', 'DRAIN02', 'DRAIN03']],
        ['ended', at(T + 3600), at(T + 5400), ['DRAIN10']],
        ['ended', at(T + 5 * 3600), expect.any(String), ['DRAIN20']],
      ]);
      const events = (await w.sessionEvents()).filter((e) => e.session === rows[0].id);
      expect(events.map((e) => e.type)).toEqual(['session.started', 'session.ended']);
      expect(events[1].data).toMatchObject({ started_at: at(T), ended_at: at(T + 3600), message_count: 3 });
    });

    it("says in session.started where a session opened by a batch begins, when a later message of the batch is earlier", async () => {
      const w = await world('5511977771047');
      await w.send(['FIRST02', T + 600], ['FIRST01', T]);
      const [s] = await w.sessions();
      expect([s.status, new Date(s.started_at).toISOString(), s.msgs]).toEqual(['active', at(T), ['FIRST01', 'FIRST02']]);
      const [started] = await w.sessionEvents();
      expect(started).toMatchObject({ type: 'session.started', data: { started_at: at(T) } });
    });

    it('keeps a late conversation longer than the timeout whole when its messages bridge as they come, and starts it at its earliest', async () => {
      const w = await world('5511977771044');
      await w.send(['LIVE01', T + 6 * 3600]);
      // Five messages ten minutes apart (50 minutes, beyond the 30-minute timeout), in another order.
      await w.send(['CONV03', T + 1200], ['CONV01', T], ['CONV02', T + 600], ['CONV05', T + 2400], ['CONV04', T + 1800]);
      const rows = await w.sessions();
      expect(rows.map((r) => [r.status, r.message_count, r.msgs])).toEqual([
        ['ended', 5, ['CONV01', 'CONV02', 'CONV03', 'CONV04', 'CONV05']],
        ['active', 1, ['LIVE01']],
      ]);
      expect([new Date(rows[0].started_at).toISOString(), new Date(rows[0].ended_at).toISOString()]).toEqual([at(T), at(T + 2400 + 1800)]);
      const events = (await w.sessionEvents()).filter((e) => e.session === rows[0].id);
      expect(events.map((e) => e.type)).toEqual(['session.started', 'session.ended']);
      expect(events[0].data).toMatchObject({ started_at: at(T) });
      expect(events[1].data).toMatchObject({ started_at: at(T), ended_at: at(T + 4200), message_count: 5, duration_seconds: 4200 });
      const contactId = rows[0].contact_id;
      // Counted once: by the session.ended consumer, from the event's whole span.
      await waitFor(async () => (await contactOf(t.db, contactId)).ended_sessions === 1 || undefined, 'the ended session counted on the contact');
      const c = await contactOf(t.db, contactId);
      expect([c.total_sessions, Number(c.total_session_seconds)]).toEqual([2, 4200]);
    });

    it('moves the start of the ended session it joins back, and the contact\'s session time with it', async () => {
      const w = await world('5511977771043');
      await w.send(['EARLY02', T]);
      await w.send(['EARLY03', T + 3 * 3600]); // ends the first session at T + 30 min
      const contactId = (await w.sessions())[0].contact_id;
      await waitFor(async () => (await contactOf(t.db, contactId)).ended_sessions === 1 || undefined, 'the ended session counted on the contact');
      const before = Number((await contactOf(t.db, contactId)).total_session_seconds);
      await w.send(['EARLY01', T - 600]); // ten minutes before it began
      const [first] = await w.sessions();
      expect(first).toMatchObject({ message_count: 2, msgs: ['EARLY01', 'EARLY02'] });
      expect(new Date(first.started_at).toISOString()).toBe(at(T - 600));
      expect(Number((await contactOf(t.db, contactId)).total_session_seconds)).toBe(before + 600);
    });
  });

  it('ends the overdue session of a contact known by its LID when its phone first comes with a message', async () => {
    const ch = await t.createChannel();
    const channel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha' as const, sessionTimeoutMinutes: 30 };
    const service = makeInboundService({ db: t.db });
    await service.apply(t.projectId, [{ channel, events: parseWahaEvent(lidMessage('90000000071050', 'LIDOVER01', undefined, T)), receivedAt: new Date() }]);
    // Four hours later (the sweeper had not got to it), the same person, now with the phone.
    await service.apply(t.projectId, [{ channel, events: parseWahaEvent(lidMessage('90000000071050', 'LIDOVER02', '5511977771050', T + 4 * 3600)), receivedAt: new Date() }]);
    const rows = (await t.db.query(`SELECT s.status, s.started_at, s.ended_at, s.message_count, s.contact_id FROM sessions s WHERE s.channel_id = $1 ORDER BY s.started_at`, [ch.id])).rows;
    expect(rows.map((r) => [r.status, r.message_count])).toEqual([['ended', 1], ['active', 1]]);
    expect(new Date(rows[0].ended_at).toISOString()).toBe('2025-11-30T00:30:00.000Z');
    expect(rows[0].contact_id).toBe(rows[1].contact_id);
    expect(await contactOf(t.db, rows[0].contact_id)).toMatchObject({ phone: '+5511977771050', total_sessions: 2 });
  });

  it('splits one batch into two sessions when its messages are further apart than the timeout', async () => {
    const ch = await t.createChannel();
    const channel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha' as const, sessionTimeoutMinutes: 30 };
    const item = (id: string, ts: number) => ({ channel, events: parseWahaEvent(wahaText('5511977770031', id, { id, ts })), receivedAt: new Date() });
    await makeInboundService({ db: t.db }).apply(t.projectId, [item('BATCH01', T), item('BATCH02', T + 60), item('BATCH03', T + 45 * 60)]);
    const rows = (await t.db.query(
      `SELECT m.external_id, s.status, s.message_count FROM messages m JOIN sessions s ON s.id = m.session_id WHERE m.channel_id = $1 ORDER BY m."timestamp"`, [ch.id])).rows;
    expect(rows).toEqual([
      { external_id: 'BATCH01', status: 'ended', message_count: 2 },
      { external_id: 'BATCH02', status: 'ended', message_count: 2 },
      { external_id: 'BATCH03', status: 'active', message_count: 1 },
    ]);
  });
});
