// Inbound edges found by driving real provider shapes through the HTTP ingress, the raw queue and
// the real processor: the business's own reaction without a chat in `to`, the first response when
// the reply is processed before the question, the order of one transaction's session events, one
// unreadable Cloud change. Each test failed before its fix. Only external parties are faked (the
// webhook bodies WAHA and Meta would post).
import { beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { inboundEventsTotal } from '../../src/observability/metrics.ts';
import { cloudBody, createCloudChannel, postCloud } from '../cloud/harness.ts';
import { count, messageByKey, startInbound, wahaText, type Channel, type Inbound } from './harness.ts';

let t: Inbound;

beforeAll(async () => {
  // References that arrive before their target are retried: long enough a schedule for a loaded machine.
  t = await startInbound({ retryDelaysMs: [200, 500, 1000, 2000, 4000, 8000] });
});

const T = 1764460800; // 2025-11-30T00:00:00Z
const ME = { id: '5511900000000@c.us', pushName: 'Loja Exemplo' };

const stored = (ch: Channel | { id: string }, key: string) => waitFor(() => messageByKey(t.db, ch.id, key), `message ${key} stored`);

/** Every outcome the processor counted for one provider event name, whatever its result. */
async function handled(event: string, provider = 'waha'): Promise<number> {
  const m = await inboundEventsTotal.get();
  return m.values
    .filter((v) => v.labels.event === event && (v.labels.provider ?? 'waha') === provider)
    .reduce((a, v) => a + v.value, 0);
}

describe('WAHA reactions made by the business', () => {
  // GOWS builds message.reaction from the raw event with getFromToParticipant(): `from` is the
  // chat, `to` is null outside groups, and the payload carries no `_data` (NOWEB does the same:
  // from = key.remoteJid, to undefined). A reaction the agent sends from the phone thus arrives as
  // {fromMe: true, from: <customer chat>, to: null}. providers.md §1: message.reaction → "record on
  // the target message".
  it("records the agent's own reaction from a GOWS/NOWEB payload (fromMe, chat in `from`, `to` null, no _data)", async () => {
    const ch = await t.createChannel();
    await t.post(ch, wahaText('5511977779001', 'posso pagar no pix?', { id: 'RVWREACT01', ts: T }));
    await stored(ch, 'RVWREACT01');

    const seen = await handled('message.reaction');
    const r = await t.post(ch, {
      id: 'evt_rvw_reaction_01', timestamp: (T + 30) * 1000, event: 'message.reaction', session: 'loja-principal', me: ME,
      payload: {
        id: 'true_5511977779001@c.us_RVWREACTME01', timestamp: T + 30, from: '5511977779001@c.us', fromMe: true, source: 'app',
        to: null, participant: null,
        reaction: { text: '👍', messageId: 'false_5511977779001@c.us_RVWREACT01' },
      },
      engine: 'GOWS',
      environment: { version: '2025.9.5', engine: 'GOWS', tier: 'PLUS' },
    });
    expect(r.status).toBe(200);
    await waitFor(async () => (await handled('message.reaction')) > seen, 'the reaction processed');

    // Before: ignored as `unknown_address` (resolveWahaContact finds no chat for fromMe without `to`).
    const target = await messageByKey(t.db, ch.id, 'RVWREACT01');
    expect(target.reactions).toEqual({ me: '👍' });
    expect((await t.api('GET', `/messages/${target.id}`)).json.reactions).toEqual([{ by: 'me', emoji: '👍', at: new Date((T + 30) * 1000).toISOString() }]);
  });

  // GOWS in a group: `from` is the group, `to` is the reactor (us). The contact was taken from `to`:
  // our own number, and the reaction's target (a group message) was never stored, so it went round
  // the retry schedule into the dead letters.
  it("skips the agent's own reaction in a group (GOWS: the group in `from`, us in `to`) instead of retrying it into a dead letter", async () => {
    const ch = await t.createChannel();
    const skipped = async () => (await inboundEventsTotal.get()).values.find((v) => v.labels.event === 'message.reaction' && v.labels.result === 'group')?.value ?? 0;
    const before = await skipped();
    const r = await t.post(ch, {
      id: 'evt_rvw_reaction_02', timestamp: (T + 40) * 1000, event: 'message.reaction', session: 'loja-principal', me: ME,
      payload: {
        id: 'true_120363000000000001@g.us_RVWREACTME02_5511900000000@c.us', timestamp: T + 40, from: '120363000000000001@g.us', fromMe: true,
        source: 'app', to: '5511900000000@c.us', participant: '5511900000000@c.us',
        reaction: { text: '🙏', messageId: 'false_120363000000000001@g.us_RVWGROUPMSG01_5511977779002@c.us' },
      },
      engine: 'GOWS',
      environment: { version: '2025.9.5', engine: 'GOWS', tier: 'PLUS' },
    });
    expect(r.status).toBe(200);
    await waitFor(async () => (await skipped()) > before, 'the reaction counted as skipped (group)');
  });
});

describe('session events of one transaction', () => {
  // A POST (or a processor batch) whose messages are further apart than the session timeout ends
  // the first session inside the transaction. The session.ended is appended while the messages are
  // stored, before the events of the messages stored so far: the outbox (and every subscriber)
  // gets session.ended before that session's session.started and message.received.
  it('appends session.started and message.received of a session before its session.ended', async () => {
    const ch = await createCloudChannel(t.api);
    const phone = '5511977779002';
    const msg = (id: string, ts: number) => ({ from: phone, id, timestamp: String(ts), type: 'text', text: { body: id } });
    const body = cloudBody({
      contacts: [{ profile: { name: 'Cliente Backlog' }, wa_id: phone }],
      messages: [msg('wamid.RVWORDER01', T), msg('wamid.RVWORDER02', T + 60), msg('wamid.RVWORDER03', T + 45 * 60)],
    });
    expect((await postCloud(t.app, ch.id, body)).status).toBe(200);
    const last = await waitFor(async () => (await t.db.query(`SELECT * FROM messages WHERE channel_id = $1 AND external_id = 'wamid.RVWORDER03'`, [ch.id])).rows[0], 'the POST stored');
    const first = (await t.db.query(`SELECT * FROM messages WHERE channel_id = $1 AND external_id = 'wamid.RVWORDER01'`, [ch.id])).rows[0];
    expect(first.session_id).not.toBe(last.session_id);

    const events = (await t.db.query(
      `SELECT seq, type, aggregate_id::text AS aggregate, data->>'session_id' AS session FROM outbox
       WHERE project_id = $1 AND type IN ('session.started', 'session.ended', 'message.received') AND data->>'channel_id' = $2 ORDER BY seq`,
      [t.projectId, ch.id])).rows;
    const seqOf = (type: string, session: string) => events.filter((e) => e.type === type && e.session === session).map((e) => Number(e.seq));
    const [started] = seqOf('session.started', first.session_id);
    const [ended] = seqOf('session.ended', first.session_id);
    const received = seqOf('message.received', first.session_id);
    expect(received).toHaveLength(2);
    // Before: [session.ended, session.started, message.received, message.received, session.started, message.received].
    expect({ startedBeforeEnded: started < ended, receivedBeforeEnded: received.every((s) => s < ended) }, JSON.stringify(events.map((e) => e.type)))
      .toEqual({ startedBeforeEnded: true, receivedBeforeEnded: true });
  });
});

describe('first response when the reply is processed before the question', () => {
  // Migration 006/015: "the first agent message after the contact's first one sets the
  // first-response metrics", and a message is counted by its own time, not by when it arrives
  // (architecture §1). A customer's message delivered after the agent's reply (a WAHA Plus retry,
  // a spilled webhook drained later, two processors) starts the session earlier, but the reply
  // that came 60 s after it is never taken as the first response.
  it('sets first_response_seconds from the reply that came after the contact message, whatever their arrival order', async () => {
    const ch = await t.createChannel();
    await t.post(ch, wahaText('5511977779006', 'Sim, temos em estoque.', { id: 'RVWFIRST02', ts: T + 60, fromMe: true, event: 'message.any' }));
    await stored(ch, 'RVWFIRST02');
    await t.post(ch, wahaText('5511977779006', 'Tem o tênis 42?', { id: 'RVWFIRST01', ts: T }));
    const m = await stored(ch, 'RVWFIRST01');
    const s = (await t.db.query('SELECT * FROM sessions WHERE id = $1', [m.session_id])).rows[0];
    expect({ started: new Date(s.started_at).toISOString(), from_contact: s.messages_from_contact, from_agent: s.messages_from_agent })
      .toEqual({ started: '2025-11-30T00:00:00.000Z', from_contact: 1, from_agent: 1 });
    // The session's own end says the customer waited 60 s for that reply, and no first response.
    expect((await t.api('POST', `/sessions/${s.id}/close`, { reason: 'resolved' })).status).toBe(200);
    const ended = (await t.db.query(`SELECT data FROM outbox WHERE aggregate_id::text = $1 AND type = 'session.ended'`, [s.id])).rows[0].data;
    // Before: {first_response_seconds: null, customer_wait_seconds: 60}, and null on the row.
    expect({ row: s.first_response_seconds, event: ended.first_response_seconds, wait: ended.customer_wait_seconds }).toEqual({ row: 60, event: 60, wait: 60 });
  });
});

describe('first response when replies are processed out of order', () => {
  // The first response is the first reply after the contact's first message (migrations 006,
  // 018). The session functions set it only while it is unset: a reply processed after a later
  // one (a WAHA retry, a spill drained later, two processors) left the later one as the first.
  it('lowers the first response to an earlier reply stored after a later one', async () => {
    const ch = await t.createChannel();
    await t.post(ch, wahaText('5511977779010', 'Vocês entregam amanhã?', { id: 'RVWORDERQ1', ts: T }));
    await stored(ch, 'RVWORDERQ1');
    await t.post(ch, wahaText('5511977779010', 'Confirmado, chega até às 18h.', { id: 'RVWORDERA2', ts: T + 120, fromMe: true, event: 'message.any' }));
    await stored(ch, 'RVWORDERA2');
    await t.post(ch, wahaText('5511977779010', 'Um momento, vou verificar.', { id: 'RVWORDERA1', ts: T + 30, fromMe: true, event: 'message.any' }));
    const m = await stored(ch, 'RVWORDERA1');
    const s = (await t.db.query('SELECT first_response_seconds, first_response_at, messages_from_agent FROM sessions WHERE id = $1', [m.session_id])).rows[0];
    // Before: 120 (the reply stored first stayed the first response).
    expect({ seconds: s.first_response_seconds, at: new Date(s.first_response_at).toISOString(), agent: s.messages_from_agent })
      .toEqual({ seconds: 30, at: '2025-11-30T00:00:30.000Z', agent: 2 });
  });
});

describe('a message of ours that arrives already failed', () => {
  // WAHA message.any carries the message's ack; ack -1 (ERROR) on a message sent from the phone
  // means it never went out; events.md has the inbound processor emit message.failed on a
  // provider ack ERROR. Stored as failed, it emitted only message.sent, left failed_at empty, and counted as the session's first response.
  it('emits message.failed, records when, and is no answer to the customer', async () => {
    const ch = await t.createChannel();
    await t.post(ch, wahaText('5511977779011', 'Qual o prazo?', { id: 'RVWACKERRQ', ts: T }));
    await stored(ch, 'RVWACKERRQ');
    const failed = wahaText('5511977779011', 'Cinco dias úteis.', { id: 'RVWACKERR1', ts: T + 40, fromMe: true, event: 'message.any' });
    failed.payload.ack = -1;
    failed.payload.ackName = 'ERROR';
    await t.post(ch, failed);
    const m = await stored(ch, 'RVWACKERR1');
    const events = (await t.db.query(`SELECT type, data FROM outbox WHERE aggregate_id = $1 ORDER BY seq`, [m.id])).rows;
    const s = (await t.db.query('SELECT first_response_seconds FROM sessions WHERE id = $1', [m.session_id])).rows[0];
    expect({
      status: m.status,
      failedAt: m.failed_at && new Date(m.failed_at).toISOString(),
      events: events.map((e) => e.type),
      failure: events[1] && { status: events[1].data.status, previous: events[1].data.previous_status, external: events[1].data.external_id },
      firstResponse: s.first_response_seconds,
    }).toEqual({
      status: 'failed',
      failedAt: '2025-11-30T00:00:40.000Z',
      events: ['message.sent', 'message.failed'],
      failure: { status: 'failed', previous: 'sent', external: 'RVWACKERR1' },
      firstResponse: null,
    });
  });
});

describe('a first response that fails after it was stored', () => {
  it('moves the first response to the next reply that went out', async () => {
    const ch = await t.createChannel();
    const phone = '5511977779012';
    await t.post(ch, wahaText(phone, 'Aceita cartão?', { id: 'RVWLATEFAILQ', ts: T }));
    await t.post(ch, wahaText(phone, 'Aceitamos sim.', { id: 'RVWLATEFAIL1', ts: T + 20, fromMe: true, event: 'message.any' }));
    await t.post(ch, wahaText(phone, 'Em até 10x.', { id: 'RVWLATEFAIL2', ts: T + 50, fromMe: true, event: 'message.any' }));
    const first = await stored(ch, 'RVWLATEFAIL1');
    await stored(ch, 'RVWLATEFAIL2');
    await stored(ch, 'RVWLATEFAILQ');
    const seconds = async () => (await t.db.query('SELECT first_response_seconds FROM sessions WHERE id = $1', [first.session_id])).rows[0].first_response_seconds;
    expect(await seconds()).toBe(20);
    await t.post(ch, {
      event: 'message.ack', session: 'loja-principal', timestamp: (T + 60) * 1000, me: ME,
      payload: { id: `true_${phone}@c.us_RVWLATEFAIL1`, from: `${phone}@c.us`, to: '5511900000000@c.us', fromMe: true, ack: -1, ackName: 'ERROR' },
    });
    await waitFor(async () => (await messageByKey(t.db, ch.id, 'RVWLATEFAIL1')).status === 'failed', 'the ack applied');
    // Before: 20 (the reply that never reached the customer stayed the first response).
    expect(await seconds()).toBe(50);
  });
});

describe('one unreadable change of a Cloud POST', () => {
  // providers.md §2: "One we cannot read (a field missing or of the wrong type: a shape Meta added
  // and we do not know yet) does not cost the others: they are processed … A body whose frame
  // (object, entry, changes) cannot be read is parked whole." parseValue() reads `contacts`,
  // `metadata`, `messages` and `statuses` of each change outside the per-item guard, so one change
  // with such a field of an unexpected type parks the whole POST, the other changes' messages too.
  it("stores the other change's message when one change's `contacts` has a shape we do not know", async () => {
    const ch = await createCloudChannel(t.api);
    const good = cloudBody({
      contacts: [{ profile: { name: 'Cliente Bom' }, wa_id: '5511977779008' }],
      messages: [{ from: '5511977779008', id: 'wamid.RVWCHANGE01', timestamp: String(T), type: 'text', text: { body: 'oi' } }],
    });
    const odd = cloudBody({
      messages: [{ from: '5511977779009', id: 'wamid.RVWCHANGE02', timestamp: String(T), type: 'text', text: { body: 'olá' } }],
    });
    odd.entry[0].changes[0].value.contacts = { '5511977779009': { profile: { name: 'Formato novo' } } };
    const body = { object: 'whatsapp_business_account', entry: [good.entry[0], odd.entry[0]] };
    const parked = async () => count(t.db, 'SELECT 1 FROM parse_errors WHERE channel_id = $1', [ch.id]);
    expect((await postCloud(t.app, ch.id, body)).status).toBe(200);
    await waitFor(async () => (await parked()) > 0 || (await messageByKey(t.db, ch.id, 'wamid.RVWCHANGE01')), 'the POST handled');
    // Before: nothing stored, the whole body parked with "…contacts must be an array, got object".
    expect(await messageByKey(t.db, ch.id, 'wamid.RVWCHANGE01')).toBeTruthy();
  });
});
