// Every WAHA fixture through the real HTTP ingress, the raw queue and the processor, read back from
// the database field by field. Expectations are written from the fixtures themselves (not from the
// parser's output), so a mapping mistake anywhere on the way fails here.
import { beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { contactOf, count, eventTypes, fixture, fixtureNames, inboundCount, messageByKey, startInbound, type Channel, type Inbound } from './harness.ts';

const FILES = 'http://localhost:3000/api/files/loja-principal';
type Expected = {
  file: string;
  key: string;
  externalId: string;
  phone: string | null;
  lid?: string;
  type: string;
  text?: string;
  media?: { url: string | null; mimetype: string; filename: string | null };
  location?: unknown;
  card?: unknown;
  replyTo?: string;
  fromMe?: boolean;
  ts: string;
  ad?: string;
  rawType?: RegExp;
};

const f = (id: string) => `false_${id}`;
// In the order of their timestamps, so session metrics (first response) are deterministic.
const MESSAGES: Expected[] = [
  { file: 'gows-text', key: '3EB0DEV000000000TEXT01', externalId: '3EB0DEV000000000TEXT01', phone: '+5511900000001', lid: '90000000000011@lid', type: 'text', text: 'Oi! Vocês abrem no sábado?', ts: '00:00:00' },
  { file: 'gows-image-caption', key: '3EB0DEV00000000IMG01', externalId: f('5511900000001@c.us_3EB0DEV00000000IMG01'), phone: '+5511900000001', type: 'image', text: 'Esse modelo tem em azul?', media: { url: `${FILES}/3EB0DEV00000000IMG01.jpeg`, mimetype: 'image/jpeg', filename: null }, ts: '00:00:59' },
  { file: 'gows-voice', key: '3EB0DEV00000000PTT01', externalId: f('5511900000002@c.us_3EB0DEV00000000PTT01'), phone: '+5511900000002', type: 'voice', media: { url: `${FILES}/3EB0DEV00000000PTT01.oga`, mimetype: 'audio/ogg; codecs=opus', filename: null }, ts: '00:01:59' },
  { file: 'gows-document', key: '3EB0DEV00000000DOC01', externalId: f('5511900000002@c.us_3EB0DEV00000000DOC01'), phone: '+5511900000002', type: 'document', media: { url: `${FILES}/3EB0DEV00000000DOC01.pdf`, mimetype: 'application/pdf', filename: 'orcamento-novembro.pdf' }, ts: '00:02:59' },
  { file: 'gows-location', key: '3EB0DEV00000000LOC01', externalId: f('5511900000002@c.us_3EB0DEV00000000LOC01'), phone: '+5511900000002', type: 'location', location: { latitude: -23.5613, longitude: -46.6565, name: null, address: null }, ts: '00:03:59' },
  {
    file: 'gows-vcard', key: '3EB0DEV00000000VCF01', externalId: f('5511900000001@c.us_3EB0DEV00000000VCF01'), phone: '+5511900000001', type: 'contact', ts: '00:04:59',
    card: { display_name: 'Marta Souza', vcards: ['BEGIN:VCARD\nVERSION:3.0\nN:Souza;Marta;;;\nFN:Marta Souza\nTEL;type=CELL;waid=5511900000009:+55 11 90000-0009\nEND:VCARD'] },
  },
  { file: 'gows-ad-referral', key: '3EB0DEV00000000ADS01', externalId: f('5511900000003@c.us_3EB0DEV00000000ADS01'), phone: '+5511900000003', lid: '90000000000033@lid', type: 'text', text: 'Olá! Quero saber mais sobre a promoção de Black Friday.', ad: '120200000000000001', ts: '00:05:59' },
  { file: 'gows-from-me-phone', key: '3EB0DEV00000000OUT01', externalId: 'true_5511900000001@c.us_3EB0DEV00000000OUT01', phone: '+5511900000001', type: 'text', text: 'Abrimos sim, das 9h às 14h!', fromMe: true, ts: '00:06:59' },
  { file: 'webjs-text', key: 'AAAADEV0000000WEBJS01', externalId: f('5511900000005@c.us_AAAADEV0000000WEBJS01'), phone: '+5511900000005', type: 'text', text: 'Boa tarde, qual o prazo de entrega?', ts: '00:09:59' },
  { file: 'noweb-text', key: '3EB0DEV000000NOWEB01', externalId: f('5511900000006@c.us_3EB0DEV000000NOWEB01'), phone: '+5511900000006', type: 'text', text: 'Preciso trocar um produto', ts: '00:10:59' },
  { file: 'gows-lid-sender-alt', key: '3EB0DEV00000000LID01', externalId: '3EB0DEV00000000LID01', phone: '+5511900000010', lid: '90000000001010@lid', type: 'text', text: 'Oi, vi o catálogo de vocês', ts: '00:11:39' },
  { file: 'noweb-lid-sender-pn', key: '3EB0DEV000000NOWEB02', externalId: f('90000000001111@lid_3EB0DEV000000NOWEB02'), phone: '+5511900000011', lid: '90000000001111@lid', type: 'text', text: 'Vocês entregam em Campinas?', ts: '00:11:59' },
  { file: 'webjs-lid-no-phone', key: 'AAAADEV0000000WEBJS03', externalId: f('90000000001212@lid_AAAADEV0000000WEBJS03'), phone: null, lid: '90000000001212@lid', type: 'text', text: 'Qual o horário de hoje?', ts: '00:12:19' },
  { file: 'gows-device-suffix', key: '3EB0DEV00000000DEV01', externalId: '3EB0DEV00000000DEV01', phone: '+5511900000013', lid: '90000000001313@lid', type: 'text', text: 'Mandei pelo computador', ts: '00:12:39' },
  { file: 'webjs-from-me', key: '3EB0DEV0000000WEBJS02', externalId: 'true_5511900000005@c.us_3EB0DEV0000000WEBJS02', phone: '+5511900000005', type: 'text', text: 'Entregamos em até 3 dias úteis.', fromMe: true, ts: '00:12:59' },
  { file: 'gows-poll', key: '3EB0DEV00000000POL01', externalId: f('5511900000002@c.us_3EB0DEV00000000POL01'), phone: '+5511900000002', type: 'unknown', text: 'Qual horário prefere?', rawType: /poll/i, ts: '00:15:19' },
  { file: 'webjs-poll', key: 'AAAADEV0000000POLL02', externalId: f('5511900000005@c.us_AAAADEV0000000POLL02'), phone: '+5511900000005', type: 'unknown', text: 'Qual horário prefere?', rawType: /poll/i, ts: '00:15:39' },
  { file: 'gows-sticker', key: '3EB0DEV00000000STK01', externalId: f('5511900000002@c.us_3EB0DEV00000000STK01'), phone: '+5511900000002', type: 'sticker', media: { url: `${FILES}/3EB0DEV00000000STK01.webp`, mimetype: 'image/webp', filename: null }, ts: '00:15:59' },
  { file: 'gows-video', key: '3EB0DEV00000000VID01', externalId: f('5511900000001@c.us_3EB0DEV00000000VID01'), phone: '+5511900000001', type: 'video', text: 'Olha o defeito na costura', media: { url: `${FILES}/3EB0DEV00000000VID01.mp4`, mimetype: 'video/mp4', filename: null }, ts: '00:16:19' },
  { file: 'gows-audio', key: '3EB0DEV00000000AUD01', externalId: f('5511900000002@c.us_3EB0DEV00000000AUD01'), phone: '+5511900000002', type: 'audio', media: { url: `${FILES}/3EB0DEV00000000AUD01.mp3`, mimetype: 'audio/mpeg', filename: null }, ts: '00:16:39' },
  { file: 'noweb-document', key: '3EB0DEV0000000NOWEB03', externalId: f('5511900000006@c.us_3EB0DEV0000000NOWEB03'), phone: '+5511900000006', type: 'document', media: { url: null, mimetype: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet', filename: 'pedido-1234.xlsx' }, ts: '00:16:59' },
  { file: 'noweb-ad-referral', key: '3EB0DEV0000000NOWEB04', externalId: f('5511900000014@c.us_3EB0DEV0000000NOWEB04'), phone: '+5511900000014', type: 'text', text: 'Quero o kit da promoção', ad: '120200000000000002', ts: '00:17:19' },
  { file: 'webjs-ad-referral', key: 'AAAADEV0000000WEBJS04', externalId: f('5511900000015@c.us_AAAADEV0000000WEBJS04'), phone: '+5511900000015', type: 'text', text: 'Olá! Tenho interesse no produto do anúncio', ad: '120200000000000004', ts: '00:17:39' },
  { file: 'webjs-reply', key: 'AAAADEV0000000WEBJS05', externalId: f('5511900000005@c.us_AAAADEV0000000WEBJS05'), phone: '+5511900000005', type: 'text', text: 'E para o interior?', replyTo: 'true_5511900000005@c.us_3EB0DEV0000000WEBJS02', ts: '00:17:59' },
];
const OTHERS = [
  'ack-server', 'ack-delivered', 'ack-read', 'ack-error', 'gows-edited', 'gows-revoked', 'webjs-reaction-add', 'webjs-reaction-remove',
  'session-status-starting', 'session-status-scan-qr-code', 'session-status-working', 'session-status-failed', 'session-status-stopped',
  'presence-update', 'gows-group-message', 'gows-status-post', 'noweb-broadcast-list', 'webjs-newsletter',
  // Engine edge cases, through the ingress in waha-engine-edges.test.ts.
  'webjs-ack-read', 'noweb-broadcast-from-contact', 'webjs-e2e-notification', 'noweb-album-image', 'webjs-location-named',
  'webjs-document-not-downloaded', 'webjs-group-ack-lid', 'gows-edited-empty', 'noweb-long-timestamp', 'noweb-list-response',
  'gows-own-chat',
];

let t: Inbound;
let ch: Channel;

beforeAll(async () => {
  t = await startInbound();
  ch = await t.createChannel();
  for (const m of MESSAGES) {
    const r = await t.post(ch, fixture(m.file));
    expect(r.status, m.file).toBe(200);
    // One at a time, so the conversation is built in its real order.
    await waitFor(() => messageByKey(t.db, ch.id, m.key), `${m.file} stored`);
  }
});

describe('WAHA fixtures through the ingress', () => {
  it('covers every fixture in test/fixtures/waha', () => {
    const covered = new Set([...MESSAGES.map((m) => m.file), ...OTHERS]);
    expect(fixtureNames().map((n) => n.replace(/\.json$/, '')).filter((n) => !covered.has(n))).toEqual([]);
  });

  it.each(MESSAGES)('stores $file with every mapped field', async (e) => {
    const m = await messageByKey(t.db, ch.id, e.key);
    expect(m.external_id).toBe(e.externalId);
    expect(m.project_id).toBe(t.projectId);
    expect(m.type).toBe(e.type);
    expect(m.text).toBe(e.text ?? null);
    expect(m.media).toEqual(e.media ?? null);
    expect(m.location).toEqual(e.location ?? null);
    expect(m.contact_card).toEqual(e.card ?? null);
    expect(m.reply_to_external_id).toBe(e.replyTo ?? null);
    expect(m.from_me).toBe(e.fromMe ?? false);
    expect(m.direction).toBe(e.fromMe ? 'outbound' : 'inbound');
    // Our own messages start where the provider's ack says (both fixtures: SERVER → sent).
    expect(m.status).toBe(e.fromMe ? 'sent' : 'received');
    expect(m.sent_at === null ? null : new Date(m.sent_at).toISOString()).toBe(e.fromMe ? `2025-11-30T${e.ts}.000Z` : null);
    expect(new Date(m.timestamp).toISOString()).toBe(`2025-11-30T${e.ts}.000Z`);
    expect(m.metadata.event).toMatch(/^message(\.any)?$/);
    if (e.rawType) expect(m.metadata.raw_type).toMatch(e.rawType);
    expect(m.ad_attribution?.source_id ?? null).toBe(e.ad ?? null);

    const c = await contactOf(t.db, m.contact_id);
    expect(c.phone).toBe(e.phone);
    expect(c.wa_id).toBe(e.phone ? e.phone.slice(1) : null);
    if (e.lid) expect(c.wa_lid).toBe(e.lid);
    const s = (await t.db.query('SELECT * FROM sessions WHERE id = $1', [m.session_id])).rows[0];
    expect(s).toMatchObject({ contact_id: c.id, channel_id: ch.id, status: 'active', timeout_minutes: 30 });

    const events = await eventTypes(t.db, m.id);
    expect(events).toEqual([e.fromMe ? 'message.sent' : 'message.received']);
  });

  it('keeps one contact per phone with its push name, LIDs and first-touch ad', async () => {
    const contacts = (await t.db.query('SELECT * FROM contacts WHERE project_id = $1', [t.projectId])).rows;
    const phones = new Set(MESSAGES.map((m) => m.phone));
    expect(contacts).toHaveLength(phones.size);
    const byPhone = (p: string | null) => contacts.find((c) => c.phone === p)!;
    expect(byPhone('+5511900000001')).toMatchObject({ name: 'Joana Prado', name_source: 'push', wa_lid: '90000000000011@lid', source: 'whatsapp', total_messages: 5, total_sessions: 1 });
    expect(byPhone('+5511900000013')).toMatchObject({ name: 'Otávio Melo', wa_lid: '90000000001313@lid' });
    expect(byPhone(null)).toMatchObject({ name: 'Vera', wa_lid: '90000000001212@lid', wa_id: null });
    const ad = byPhone('+5511900000003');
    expect(ad.source).toBe('ctwa_ad');
    expect(ad.ad_attribution).toMatchObject({ source_id: '120200000000000001', ctwa_clid: 'FAKE-CTWA-CLID-0001', source_app: 'instagram' });
    expect(new Date(byPhone('+5511900000002').first_interaction_at).toISOString()).toBe('2025-11-30T00:01:59.000Z');
    expect(new Date(byPhone('+5511900000002').last_interaction_at).toISOString()).toBe('2025-11-30T00:16:39.000Z');
    for (const c of contacts) expect(await eventTypes(t.db, c.id), c.phone).toEqual(c.ad_attribution ? ['contact.created', 'tracking.ad_click'] : ['contact.created']);
  });

  it('describes the ad in the same catalogue shape whether the inbound path or the API changed the contact', async () => {
    const ad = (await t.db.query(`SELECT id FROM contacts WHERE project_id = $1 AND phone = '+5511900000003'`, [t.projectId])).rows[0];
    expect((await t.api('PATCH', `/contacts/${ad.id}`, { tags: ['from-ad'] })).status).toBe(200);
    const data = async (type: string) =>
      (await t.db.query(`SELECT data FROM outbox WHERE aggregate_id = $1 AND type = $2`, [ad.id, type])).rows[0].data.ad_attribution;
    const created = await data('contact.created');
    expect(created).toMatchObject({ source_id: '120200000000000001', ctwa_clid: 'FAKE-CTWA-CLID-0001' });
    expect(Object.keys(created)).toContain('image_url');
    expect(await data('contact.updated')).toEqual(created);
  });

  it('counts each conversation on one session: contact vs agent messages and the first response', async () => {
    const sessions = (await t.db.query(
      `SELECT s.*, c.phone FROM sessions s JOIN contacts c ON c.id = s.contact_id WHERE s.channel_id = $1`, [ch.id])).rows;
    expect(sessions.every((s) => s.status === 'active')).toBe(true);
    const of = (p: string) => sessions.find((s) => s.phone === p)!;
    expect(of('+5511900000001')).toMatchObject({ message_count: 5, messages_from_contact: 4, messages_from_agent: 1, first_response_seconds: 419 });
    expect(of('+5511900000002')).toMatchObject({ message_count: 6, messages_from_contact: 6, messages_from_agent: 0, first_response_seconds: null });
    expect(of('+5511900000005')).toMatchObject({ message_count: 4, messages_from_contact: 3, messages_from_agent: 1, first_response_seconds: 180 });
    const one = of('+5511900000001');
    expect(new Date(one.started_at).toISOString()).toBe('2025-11-30T00:00:00.000Z');
    expect(new Date(one.last_activity_at).toISOString()).toBe('2025-11-30T00:16:19.000Z');
    expect(new Date(one.due_at).toISOString()).toBe('2025-11-30T00:46:19.000Z');
    for (const s of sessions) expect(await eventTypes(t.db, s.id)).toEqual(['session.started']);
  });

  it('moves the status of our message forward only, with an event per step', async () => {
    const key = '3EB0DEV00000000OUT01';
    expect((await messageByKey(t.db, ch.id, key)).status).toBe('sent');
    const unchanged = await inboundCount({ event: 'message.ack', result: 'unchanged' });
    expect((await t.post(ch, fixture('ack-server'))).status).toBe(200); // sent → sent: not a move
    await waitFor(async () => (await inboundCount({ event: 'message.ack', result: 'unchanged' })) > unchanged, 'ack-server counted');
    await t.post(ch, fixture('ack-delivered'));
    await waitFor(async () => (await messageByKey(t.db, ch.id, key)).status === 'delivered', 'delivered');
    await t.post(ch, fixture('ack-read'));
    await waitFor(async () => (await messageByKey(t.db, ch.id, key)).status === 'read', 'read');
    const before = await inboundCount({ event: 'message.ack', result: 'unchanged' });
    await t.post(ch, fixture('ack-delivered')); // backwards
    await waitFor(async () => (await inboundCount({ event: 'message.ack', result: 'unchanged' })) > before, 'late ack counted');
    const m = await messageByKey(t.db, ch.id, key);
    expect(m.status).toBe('read');
    expect(new Date(m.delivered_at).toISOString()).toBe('2025-11-30T00:07:20.000Z');
    expect(new Date(m.read_at).toISOString()).toBe('2025-11-30T00:08:00.000Z');
    const r = await t.db.query(`SELECT type, data FROM outbox WHERE aggregate_id = $1 AND type LIKE 'message.%' ORDER BY seq`, [m.id]);
    expect(r.rows.map((x) => x.type)).toEqual(['message.sent', 'message.delivered', 'message.read']);
    expect(r.rows[2].data).toMatchObject({ status: 'read', previous_status: 'delivered', external_id: m.external_id, contact_id: m.contact_id });
  });

  it('parks an ack whose message never arrives, after its retries, counted and not dead-lettered', async () => {
    const labels = { provider: 'waha', event: 'webhook', result: 'unknown_target' };
    const before = await inboundCount(labels);
    await t.post(ch, fixture('ack-error'));
    const parked = await waitFor(async () => (await t.db.query(`SELECT * FROM parse_errors WHERE channel_id = $1`, [ch.id])).rows[0], 'parked');
    expect(parked.reason).toMatch(/does not have \(yet\), after 4 attempts/); // the harness's three delays
    expect(parked.event_type).toBe('message.ack');
    expect(JSON.parse(Buffer.from(parked.body).toString('utf8')).payload.id).toBe('true_5511900000001@c.us_3EB0DEV00000000OUT02');
    expect(await inboundCount(labels)).toBe(before + 1);
    expect(await count(t.db, 'SELECT 1 FROM dead_letters WHERE project_id = $1', [t.projectId])).toBe(0);
    await t.db.query('DELETE FROM parse_errors WHERE channel_id = $1', [ch.id]); // the other tests expect none
  });

  it('applies edits, revokes and reactions to their target, shown by the API and announced as events', async () => {
    for (const name of ['gows-edited', 'gows-revoked', 'webjs-reaction-add']) expect((await t.post(ch, fixture(name))).status).toBe(200);
    const shown = async (key: string) => (await t.api('GET', `/messages/${(await messageByKey(t.db, ch.id, key)).id}`)).json;
    const edited = await waitFor(async () => {
      const m = await shown('3EB0DEV000000000TEXT01');
      return m.edited_at ? m : undefined;
    }, 'edit applied');
    expect(edited.text).toBe('Oi! Vocês abrem no sábado e no domingo?');
    expect(edited.metadata.original_text).toBe('Oi! Vocês abrem no sábado?');
    expect(edited.edited_at).toBe(new Date(fixture('gows-edited').payload.timestamp * 1000).toISOString());
    const revoked = await waitFor(async () => {
      const m = await shown('3EB0DEV00000000IMG01');
      return m.revoked_at ? m : undefined;
    }, 'revoke applied');
    expect(revoked.revoked_at).toBe('2025-11-30T00:14:39.000Z');
    const reacted = await waitFor(async () => {
      const m = await shown('3EB0DEV0000000WEBJS02');
      return m.reactions.length > 0 ? m : undefined;
    }, 'reaction');
    expect(reacted.reactions).toEqual([{ by: 'contact', emoji: '👍', at: new Date(fixture('webjs-reaction-add').payload.timestamp * 1000).toISOString() }]);
    await t.post(ch, fixture('webjs-reaction-remove'));
    await waitFor(async () => (await shown('3EB0DEV0000000WEBJS02')).reactions.length === 0, 'reaction removed');

    const events = async (id: string) => (await t.db.query(`SELECT type, data FROM outbox WHERE aggregate_id = $1 AND type IN ('message.edited', 'message.revoked', 'message.reacted') ORDER BY seq`, [id])).rows;
    expect(await events(edited.id)).toEqual([{ type: 'message.edited', data: expect.objectContaining({ message_id: edited.id, contact_id: edited.contact_id, session_id: edited.session_id, channel_id: ch.id, external_id: edited.external_id, direction: 'inbound', from_me: false, text: 'Oi! Vocês abrem no sábado e no domingo?', previous_text: 'Oi! Vocês abrem no sábado?', edited_at: edited.edited_at }) }]);
    expect(await events(revoked.id)).toEqual([{ type: 'message.revoked', data: expect.objectContaining({ message_id: revoked.id, direction: 'inbound', from_me: false, revoked_at: revoked.revoked_at }) }]);
    expect((await events(reacted.id)).map((e) => [e.data.by, e.data.emoji, e.data.previous_emoji])).toEqual([['contact', '👍', null], ['contact', null, '👍']]);
  });

  it("shows a contact's reaction written under their phone by a process older than migration 029, and replaces it", async () => {
    const mine = await t.createChannel();
    expect((await t.post(mine, fixture('webjs-from-me'))).status).toBe(200);
    const target = await waitFor(() => messageByKey(t.db, mine.id, '3EB0DEV0000000WEBJS02'), 'target stored');
    // As an old process still running through a rolling deploy writes it.
    await t.db.query(`UPDATE messages SET reactions = '{"+5511900000005": "🔥", "me": "👍"}', reactions_at = '{"+5511900000005": "2025-11-30T00:00:00Z", "me": "2025-11-30T00:00:01Z"}' WHERE id = $1`, [target.id]);
    const shown = async () => (await t.api('GET', `/messages/${target.id}`)).json.reactions;
    expect(await shown()).toEqual([{ by: 'contact', emoji: '🔥', at: '2025-11-30T00:00:00.000Z' }, { by: 'me', emoji: '👍', at: '2025-11-30T00:00:01.000Z' }]);
    const handled = await inboundCount({ event: 'message.reaction', result: 'updated' });
    await t.post(mine, fixture('webjs-reaction-remove')); // the contact's removal, newer than 🔥
    await waitFor(async () => (await inboundCount({ event: 'message.reaction', result: 'updated' })) > handled, 'removal handled');
    expect(await shown()).toEqual([{ by: 'me', emoji: '👍', at: '2025-11-30T00:00:01.000Z' }]);
    const stored = await messageByKey(t.db, mine.id, '3EB0DEV0000000WEBJS02');
    expect(Object.keys(stored.reactions)).toEqual(['me']);
    expect(Object.keys(stored.reactions_at).sort()).toEqual(['contact', 'me']);
    const r = await t.db.query(`SELECT data FROM outbox WHERE aggregate_id = $1 AND type = 'message.reacted'`, [target.id]);
    expect(r.rows.map((x) => [x.data.by, x.data.emoji, x.data.previous_emoji])).toEqual([['contact', null, '🔥']]);
  });

  it('keeps one reaction per party whichever id (LID or phone) names the contact, and announces only changes', async () => {
    const mine = await t.createChannel();
    expect((await t.post(mine, fixture('webjs-from-me'))).status).toBe(200);
    const target = await waitFor(() => messageByKey(t.db, mine.id, '3EB0DEV0000000WEBJS02'), 'target stored');
    const add = fixture('webjs-reaction-add');
    const reactionFrom = (from: string, text: string, ts: number, id: string) => ({ ...add, id, payload: { ...add.payload, id, from, timestamp: ts, reaction: { ...add.payload.reaction, text } } });
    const handled = async () => (await inboundCount({ event: 'message.reaction', result: 'updated' })) + (await inboundCount({ event: 'message.reaction', result: 'unchanged' }));
    const send = async (body: unknown) => {
      const before = await handled();
      expect((await t.post(mine, body)).status).toBe(200);
      await waitFor(async () => (await handled()) > before, 'reaction handled');
    };
    const shown = async () => (await t.api('GET', `/messages/${target.id}`)).json.reactions;
    // Added under the contact's LID, then replaced and removed under their phone: one reaction.
    await send(reactionFrom('123456789012345@lid', '❤️', add.payload.timestamp + 10, 'r-lid-1'));
    expect(await shown()).toEqual([{ by: 'contact', emoji: '❤️', at: expect.any(String) }]);
    await send(reactionFrom(add.payload.from, '😂', add.payload.timestamp + 20, 'r-pn-1'));
    expect(await shown()).toEqual([{ by: 'contact', emoji: '😂', at: expect.any(String) }]);
    await send(reactionFrom(add.payload.from, '😂', add.payload.timestamp + 20, 'r-pn-1')); // delivered again
    await send(reactionFrom(add.payload.from, '', add.payload.timestamp + 30, 'r-pn-2'));
    expect(await shown()).toEqual([]);
    const r = await t.db.query(`SELECT data FROM outbox WHERE aggregate_id = $1 AND type = 'message.reacted' ORDER BY seq`, [target.id]);
    expect(r.rows.map((x) => [x.data.by, x.data.emoji, x.data.previous_emoji])).toEqual([['contact', '❤️', null], ['contact', '😂', '❤️'], ['contact', null, '😂']]);
  });

  it('follows the WAHA session status on the channel and announces each change', async () => {
    const states: Array<[string, string]> = [
      ['session-status-starting', 'connecting'],
      ['session-status-scan-qr-code', 'connecting'],
      ['session-status-working', 'active'],
      ['session-status-failed', 'error'],
      ['session-status-stopped', 'inactive'],
    ];
    // The fixtures' own times are not in this order; each is sent as the newest so far (an older
    // status event is stale: see the test below).
    for (const [i, [name, status]] of states.entries()) {
      const seen = await inboundCount({ event: 'session.status', result: 'updated' }) + await inboundCount({ event: 'session.status', result: 'unchanged' });
      await t.post(ch, { ...fixture(name), timestamp: 1764470000000 + i * 1000 });
      await waitFor(async () => (await inboundCount({ event: 'session.status', result: 'updated' })) + (await inboundCount({ event: 'session.status', result: 'unchanged' })) > seen, name);
      expect((await t.api('GET', `/channels/${ch.id}`)).json.status, name).toBe(status);
    }
    const r = await t.db.query(`SELECT data FROM outbox WHERE aggregate_id = $1 AND type = 'channel.status_changed' ORDER BY seq`, [ch.id]);
    expect(r.rows.map((x) => [x.data.previous_status, x.data.status])).toEqual([
      ['inactive', 'connecting'], ['connecting', 'active'], ['active', 'error'], ['error', 'inactive'],
    ]);
  });

  it('lets no reaction or session status older than the one applied undo it (deliveries come out of order)', async () => {
    // The removal arrives first, then the older 👍 it removed (a retry, a drained spill): still removed.
    const mine = await t.createChannel();
    const reactions = async () => (await messageByKey(t.db, mine.id, '3EB0DEV0000000WEBJS02'))?.reactions;
    expect((await t.post(mine, fixture('webjs-from-me'))).status).toBe(200);
    await waitFor(() => messageByKey(t.db, mine.id, '3EB0DEV0000000WEBJS02'), 'target stored');
    // Both come out `unchanged` (a removal of no reaction, then one older than it): counted from
    // before the first, both must have been handled.
    const handled = await inboundCount({ event: 'message.reaction', result: 'unchanged' });
    await t.post(mine, fixture('webjs-reaction-remove'));
    await waitFor(async () => (await messageByKey(t.db, mine.id, '3EB0DEV0000000WEBJS02')).reactions_at.contact, 'removal applied');
    await t.post(mine, fixture('webjs-reaction-add'));
    await waitFor(async () => (await inboundCount({ event: 'message.reaction', result: 'unchanged' })) >= handled + 2, 'older reaction handled');
    expect(await reactions()).toEqual({});
    // A newer one still applies.
    await t.post(mine, { ...fixture('webjs-reaction-add'), payload: { ...fixture('webjs-reaction-add').payload, timestamp: 1764461999 } });
    await waitFor(async () => (await reactions())?.contact === '👍', 'newer reaction applied');

    // WORKING at t+100 s, then a STARTING from t (spilled during an outage, drained later): stale.
    const other = await t.createChannel();
    const base = 1764480000000;
    await t.post(other, { ...fixture('session-status-working'), timestamp: base + 100_000 });
    await waitFor(async () => (await t.api('GET', `/channels/${other.id}`)).json.status === 'active', 'working applied');
    const before = await inboundCount({ event: 'session.status', result: 'unchanged' });
    await t.post(other, { ...fixture('session-status-starting'), timestamp: base });
    await waitFor(async () => (await inboundCount({ event: 'session.status', result: 'unchanged' })) > before, 'stale status handled');
    expect((await t.api('GET', `/channels/${other.id}`)).json.status).toBe('active');
    const changes = await t.db.query(`SELECT data FROM outbox WHERE aggregate_id = $1 AND type = 'channel.status_changed'`, [other.id]);
    expect(changes.rows.map((r) => r.data.status)).toEqual(['active']);
    // WORKING again at t+300 s (no change), then a STARTING from t+200 s: stale as well. The second
    // is posted once the first is handled: the processor applies several webhooks at once, so two
    // posted together could be applied in either order, and the STARTING first is not stale.
    const seen = await inboundCount({ event: 'session.status', result: 'unchanged' });
    await t.post(other, { ...fixture('session-status-working'), timestamp: base + 300_000 });
    await waitFor(async () => (await inboundCount({ event: 'session.status', result: 'unchanged' })) > seen, 'the repeated WORKING handled');
    await t.post(other, { ...fixture('session-status-starting'), timestamp: base + 200_000 });
    await waitFor(async () => (await inboundCount({ event: 'session.status', result: 'unchanged' })) > seen + 1, 'the older STARTING handled');
    expect((await t.api('GET', `/channels/${other.id}`)).json.status).toBe('active');
    // A newer one still applies.
    await t.post(other, { ...fixture('session-status-failed'), timestamp: base + 400_000 });
    await waitFor(async () => (await t.api('GET', `/channels/${other.id}`)).json.status === 'error', 'newer status applied');
  });

  it('skips groups, Status posts, broadcast lists, newsletters and unknown events, counting them', async () => {
    const cases: Array<[string, string, string]> = [
      ['gows-group-message', 'message', 'group'],
      ['gows-status-post', 'message', 'status'],
      ['noweb-broadcast-list', 'message.any', 'broadcast'],
      ['webjs-newsletter', 'message', 'newsletter'],
      ['presence-update', 'presence.update', 'unhandled_event'],
    ];
    const messagesBefore = await count(t.db, 'SELECT 1 FROM messages');
    const contactsBefore = await count(t.db, 'SELECT 1 FROM contacts');
    for (const [name, event, result] of cases) {
      const before = await inboundCount({ event, result });
      expect((await t.post(ch, fixture(name))).status).toBe(200);
      await waitFor(async () => (await inboundCount({ event, result })) > before, `${name} counted as ${result}`);
    }
    expect(await count(t.db, 'SELECT 1 FROM messages')).toBe(messagesBefore);
    expect(await count(t.db, 'SELECT 1 FROM contacts')).toBe(contactsBefore);
    expect(await count(t.db, 'SELECT 1 FROM parse_errors')).toBe(0);
  });

  it('serves a stored message through the read API in the contract shape', async () => {
    const m = await messageByKey(t.db, ch.id, '3EB0DEV00000000DOC01');
    const r = await t.api('GET', `/messages/${m.id}`);
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({
      id: m.id, channel_id: ch.id, direction: 'inbound', from_me: false, type: 'document',
      media: { url: `${FILES}/3EB0DEV00000000DOC01.pdf`, mimetype: 'application/pdf', filename: 'orcamento-novembro.pdf' },
      external_id: 'false_5511900000002@c.us_3EB0DEV00000000DOC01', timestamp: '2025-11-30T00:02:59.000Z',
    });
  });
});
