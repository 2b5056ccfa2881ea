// Meta's webhooks through the real ingress: every fixture signed with the channel's app secret,
// processed by the real processor, and read back through the API field by field. Then the cases the
// fixtures do not cover: every message type, a status before its message, a failed status, bad
// signatures, the verification handshake, and a body delivered twice.
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { count, fixture, fixtureNames, inboundCount, startInbound } from '../inbound/harness.ts';
import {
  APP_SECRET, VERIFY_TOKEN, cloudBody, cloudMessage, cloudStatus, cloudText, createCloudChannel, postCloud, sendAccepted, sign, startFakeGraph, wamid,
} from './harness.ts';
import { newPhone } from '../support/phones.ts';

// Statuses that arrive before their message are retried by the broker: give them a long enough
// schedule to outlive a send on a loaded machine.
const t = await startInbound({ retryDelaysMs: [200, 500, 1000, 2000, 4000, 8000, 15000] });
const graph = await startFakeGraph();
const channel = await createCloudChannel(t.api, { api_base_url: graph.url });

const row = async (externalId: string, channelId = channel.id) =>
  (await t.db.query('SELECT * FROM messages WHERE channel_id = $1 AND external_id = $2', [channelId, externalId])).rows[0];
/** The message as the API shows it, once the processor stored it. */
async function readBack(externalId: string): Promise<any> {
  const r = await waitFor(() => row(externalId), `message ${externalId} stored`, 30_000);
  const api = await t.api('GET', `/messages/${r.id}`);
  expect(api.status).toBe(200);
  return api.json;
}
const contact = async (id: string) => (await t.api('GET', `/contacts/${id}`)).json;
const eventsOf = async (aggregateId: string, type: string) =>
  (await t.db.query('SELECT data FROM outbox WHERE aggregate_id = $1 AND type = $2 ORDER BY seq', [aggregateId, type])).rows.map((r) => r.data);

/** An outbound reply through POST /messages whose wamid Meta (the fake) says is `id`. */
async function reply(phone: string, id: string): Promise<string> {
  graph.respond((c) => (c.body?.to === phone ? sendAccepted(phone, id) : undefined));
  const r = await t.api('POST', '/messages', { channel_id: channel.id, phone: `+${phone}`, type: 'text', text: `reply ${id}` });
  expect(r.status, JSON.stringify(r.json)).toBe(202);
  return (await waitFor(async () => ((await row(id))?.status === 'sent' ? row(id) : undefined), `${id} sent`, 30_000)).id;
}

const OUT = (n: number) => `wamid.DEV0000000000000000000000000OUT00${n}`;
const at = (s: number) => new Date(s * 1000).toISOString();

// Fixture → what the API must show for it. In posting order: a reaction before its removal.
const CHECKS: Array<[string, () => Promise<void>]> = [
  ['text', async () => {
    const m = await readBack('wamid.DEV0000000000000000000000000TEXT01');
    expect(m).toMatchObject({ direction: 'inbound', from_me: false, type: 'text', text: 'Oi! Vocês abrem no sábado?', channel_id: channel.id, timestamp: at(1764460800), status: 'received' });
    expect(await contact(m.contact_id)).toMatchObject({ name: 'Joana Prado', phone: '+5511900000001', wa_id: '5511900000001' });
    expect(m.session_id).toBeTruthy();
  }],
  ['image-caption', async () => {
    const m = await readBack('wamid.DEV00000000000000000000000000IMG01');
    expect(m).toMatchObject({ type: 'image', text: 'Esse modelo tem em azul?', media: { url: null, mimetype: 'image/jpeg', filename: null } });
    expect((await row(m.external_id)).media).toMatchObject({ media_id: '300000000000001', sha256: 'ZmFrZS1zaGEtMjU2' });
  }],
  ['video', async () => expect(await readBack('wamid.DEV00000000000000000000000000VID01')).toMatchObject({ type: 'video', text: 'Olha o defeito na costura', media: { mimetype: 'video/mp4' } })],
  ['audio', async () => expect(await readBack('wamid.DEV00000000000000000000000000AUD01')).toMatchObject({ type: 'audio', text: null, media: { mimetype: 'audio/mpeg' } })],
  ['voice', async () => expect(await readBack('wamid.DEV00000000000000000000000000PTT01')).toMatchObject({ type: 'voice', media: { mimetype: 'audio/ogg; codecs=opus' } })],
  ['document', async () => {
    const m = await readBack('wamid.DEV00000000000000000000000000DOC01');
    expect(m).toMatchObject({ type: 'document', text: 'Segue o orçamento', media: { mimetype: 'application/pdf', filename: 'orcamento-novembro.pdf' } });
    expect(await contact(m.contact_id)).toMatchObject({ name: 'Carlos Lima', phone: '+5511900000002' });
  }],
  ['sticker', async () => expect(await readBack('wamid.DEV00000000000000000000000000STK01')).toMatchObject({ type: 'sticker', media: { mimetype: 'image/webp' } })],
  ['location', async () =>
    expect(await readBack('wamid.DEV00000000000000000000000000LOC02')).toMatchObject({ type: 'location', location: { latitude: -22.9068, longitude: -43.1729, name: 'Loja Centro', address: 'Rua da Assembleia, 10' } })],
  ['contacts', async () => {
    const m = await readBack('wamid.DEV00000000000000000000000000VCF01');
    expect(m.type).toBe('contact');
    expect(JSON.stringify(m.contact_card)).toContain('FN:Marta Souza');
    expect(JSON.stringify(m.contact_card)).toContain('waid=5511900000009');
  }],
  ['interactive-button-reply', async () => {
    const m = await readBack('wamid.DEV00000000000000000000000000BTN02');
    expect(m).toMatchObject({ type: 'interactive', text: 'Remarcar', reply_to_external_id: OUT(3), metadata: { interactive_type: 'button_reply', reply_id: 'reschedule' } });
  }],
  ['interactive-list-reply', async () =>
    expect(await readBack('wamid.DEV00000000000000000000000000LST01')).toMatchObject({
      type: 'interactive', text: 'Sábado 10h', reply_to_external_id: OUT(4), metadata: { interactive_type: 'list_reply', reply_id: 'slot_sat_10', reply_description: 'Loja Paulista' },
    })],
  ['button', async () =>
    expect(await readBack('wamid.DEV00000000000000000000000000TPL01')).toMatchObject({ type: 'button', text: 'Confirmar pedido', reply_to_external_id: OUT(5), metadata: { button_payload: 'CONFIRM_ORDER_1234' } })],
  ['two-messages-one-post', async () => {
    expect(await readBack('wamid.DEV00000000000000000000000000LOC01')).toMatchObject({ type: 'location', location: { name: 'Loja Paulista' } });
    expect(await readBack('wamid.DEV00000000000000000000000000BTN01')).toMatchObject({ type: 'interactive', text: 'Confirmar', reply_to_external_id: OUT(1) });
  }],
  ['ad-referral', async () => {
    const m = await readBack('wamid.DEV00000000000000000000000000ADS01');
    const c = await contact(m.contact_id);
    expect(c).toMatchObject({ name: 'Rafa', phone: '+5511900000003' });
    expect(c.ad_attribution).toMatchObject({ source_type: 'ad', source_id: '120200000000000001', source_url: 'https://fb.me/FAKEAD01', headline: 'BLACK FRIDAY LOJA EXEMPLO' });
    const [click] = await eventsOf(m.contact_id, 'tracking.ad_click');
    expect(click).toMatchObject({ source_id: '120200000000000001', message_id: m.id, contact_id: m.contact_id, channel_id: channel.id });
  }],
  ['unsupported', async () => {
    const m = await readBack('wamid.DEV00000000000000000000000000UNS01');
    expect(m).toMatchObject({ type: 'unknown', metadata: { raw_type: 'unsupported', errors: [{ code: 131051, title: 'Message type unknown' }] } });
  }],
  ['statuses', async () => {
    const one = await waitFor(async () => ((await row(OUT(1)))?.status === 'read' ? row(OUT(1)) : undefined), 'OUT001 read', 30_000);
    expect(one.delivered_at).toEqual(new Date(1764461300 * 1000));
    expect(one.read_at).toEqual(new Date(1764461310 * 1000));
    const two = await waitFor(async () => ((await row(OUT(2)))?.status === 'failed' ? row(OUT(2)) : undefined), 'OUT002 failed', 30_000);
    expect(two.error).toMatchObject({ code: 131047, title: 'Re-engagement message' });
    const [failed] = await eventsOf(two.id, 'message.failed');
    expect(failed).toMatchObject({ status: 'failed', error_code: '131047', error: 'More than 24 hours have passed since the recipient last replied.' });
  }],
  ['status-sent', async () => {
    // Already sent when Meta accepted it: a `sent` status changes nothing and emits nothing.
    await waitFor(async () => (await inboundCount({ provider: 'whatsapp_cloud', event: 'statuses', result: 'unchanged' })) > 0, 'sent status seen', 30_000);
    expect((await row(OUT(6))).status).toBe('sent');
  }],
  ['multi-entry', async () => {
    expect(await readBack('wamid.DEV00000000000000000000000000MLT01')).toMatchObject({ text: 'Chegou, obrigada!' });
    await waitFor(async () => (await row(OUT(7)))?.status === 'delivered', 'OUT007 delivered', 30_000);
    // The second entry is for business number 200000000000002, not this channel's. One POST is
    // one transaction: with MLT01 stored, MLT02 was seen too, and skipped.
    expect(await row('wamid.DEV00000000000000000000000000MLT02')).toBeUndefined();
  }],
  ['other-phone-number', async () => {
    expect(await readBack('wamid.DEV00000000000000000000000000OPN01')).toMatchObject({ text: 'Mensagem para este número', channel_id: channel.id });
    expect(await row('wamid.DEV00000000000000000000000000OPN02')).toBeUndefined();
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE phone = $1', ['+5511900000077'])).toBe(0);
  }],
  ['reaction', async () => {
    await waitFor(async () => JSON.stringify((await row(OUT(1))).reactions ?? {}).includes('❤️'), 'reaction recorded', 30_000);
  }],
  ['reaction-removed', async () => {
    await waitFor(async () => !JSON.stringify((await row(OUT(1))).reactions ?? {}).includes('❤️'), 'reaction removed', 30_000);
  }],
];

describe('every Cloud fixture through the signed ingress to the API', () => {
  it('covers every fixture file', () => {
    expect(CHECKS.map(([n]) => `${n}.json`).sort()).toEqual(fixtureNames('whatsapp-cloud'));
  });

  it('maps each fixture', async () => {
    // Our replies the fixtures' statuses, reactions and contexts refer to.
    const recipients: Record<number, string> = { 1: '5511900000002', 2: '5511900000002', 3: '5511900000001', 4: '5511900000001', 5: '5511900000016', 6: '5511900000016', 7: '5511900000001' };
    for (const [n, phone] of Object.entries(recipients)) await reply(phone, OUT(Number(n)));
    for (const [name, check] of CHECKS) {
      const r = await postCloud(t.app, channel.id, fixture(name, 'whatsapp-cloud'));
      expect(r, name).toMatchObject({ status: 200, json: { status: 'queued' } });
      await check();
    }
  });
});

describe('Cloud message types, statuses and signatures', () => {
  const phone = () => newPhone();

  it.each([
    ['text', { text: { body: 'oi' } }, { type: 'text', text: 'oi' }],
    ['image', { image: { id: '901', mime_type: 'image/png', caption: 'foto' } }, { type: 'image', text: 'foto', media: { mimetype: 'image/png' } }],
    ['video', { video: { id: '902', mime_type: 'video/mp4' } }, { type: 'video', media: { mimetype: 'video/mp4' } }],
    ['audio', { audio: { id: '903', mime_type: 'audio/ogg', voice: false } }, { type: 'audio' }],
    ['voice', { audio: { id: '904', mime_type: 'audio/ogg; codecs=opus', voice: true } }, { type: 'voice' }],
    ['document', { document: { id: '905', mime_type: 'application/pdf', filename: 'a.pdf' } }, { type: 'document', media: { filename: 'a.pdf' } }],
    ['sticker', { sticker: { id: '906', mime_type: 'image/webp' } }, { type: 'sticker' }],
    ['location', { location: { latitude: 1.5, longitude: 2.5 } }, { type: 'location', location: { latitude: 1.5, longitude: 2.5 } }],
    ['contacts', { contacts: [{ name: { formatted_name: 'Ana' }, phones: [{ phone: '+55 11 1', wa_id: '55111' }] }] }, { type: 'contact' }],
    ['interactive', { interactive: { type: 'button_reply', button_reply: { id: 'b1', title: 'Sim' } } }, { type: 'interactive', text: 'Sim', metadata: { reply_id: 'b1' } }],
    ['interactive', { interactive: { type: 'list_reply', list_reply: { id: 'l1', title: 'Opção', description: 'd' } } }, { type: 'interactive', text: 'Opção', metadata: { reply_id: 'l1' } }],
    ['button', { button: { text: 'Parar', payload: 'STOP' } }, { type: 'button', text: 'Parar', metadata: { button_payload: 'STOP' } }],
  ])('stores a %s message', async (rawType, content, expected) => {
    const type = rawType === 'voice' ? 'audio' : rawType;
    const p = phone();
    const { msg, body } = cloudMessage(p, type, { ...content, context: { from: '5511900000000', id: 'wamid.CTX' } }, { name: 'Pessoa Tipo' });
    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    const m = await readBack(msg.id);
    expect(m).toMatchObject({ ...expected, direction: 'inbound', reply_to_external_id: 'wamid.CTX' });
    expect(await contact(m.contact_id)).toMatchObject({ phone: `+${p}`, name: 'Pessoa Tipo' });
    expect(await eventsOf(m.id, 'message.received')).toHaveLength(1);
  });

  it("skips a change addressed to another business number, counting it, and keeps the rest of the POST", async () => {
    const [mine, theirs] = [phone(), phone()];
    const kept = cloudText(mine, 'para este número', { name: 'Cliente Daqui' });
    const skipped = cloudText(theirs, 'para outro número', { name: 'Cliente de Lá' });
    // The other number's change first: skipping it must not stop the one after it.
    const body = cloudBody({ contacts: [{ profile: { name: 'Cliente Daqui' }, wa_id: mine }], messages: [kept.msg] });
    const foreign = cloudBody({ contacts: [{ profile: { name: 'Cliente de Lá' }, wa_id: theirs }], messages: [skipped.msg], phoneNumberId: '200000000000999' });
    body.entry[0].changes.unshift(foreign.entry[0].changes[0]);
    const labels = { provider: 'whatsapp_cloud', event: 'messages', result: 'other_phone_number' };
    const before = await inboundCount(labels);

    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    expect(await readBack(kept.msg.id)).toMatchObject({ text: 'para este número', channel_id: channel.id });
    await waitFor(async () => (await inboundCount(labels)) === before + 1, 'the skipped change counted', 30_000);
    expect(await row(skipped.msg.id)).toBeUndefined();
    expect(await count(t.db, 'SELECT 1 FROM messages WHERE external_id = $1', [skipped.msg.id])).toBe(0);
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE phone = $1', [`+${theirs}`])).toBe(0);
    expect(await count(t.db, 'SELECT 1 FROM parse_errors WHERE channel_id = $1', [channel.id])).toBe(0);
  });

  it('stores the readable messages of a POST with one it cannot read, and parks the body for that one', async () => {
    const [good, later] = [phone(), phone()];
    const first = cloudText(good, 'legível', { name: 'Cliente Legível' });
    const last = cloudText(later, 'também legível', { name: 'Outro Cliente' });
    // A message of a shape we do not know (no sender), between two we can read, in two changes.
    const unreadable = { id: wamid('bad'), timestamp: '1764460800', type: 'text', text: { body: 'de quem?' } };
    const body = cloudBody({ contacts: [{ profile: { name: 'Cliente Legível' }, wa_id: good }], messages: [first.msg, unreadable] });
    body.entry[0].changes.push(last.body.entry[0].changes[0]);
    const labels = { provider: 'whatsapp_cloud', event: 'messages', result: 'malformed' };
    const before = await inboundCount(labels);

    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    expect(await readBack(first.msg.id)).toMatchObject({ text: 'legível' });
    expect(await readBack(last.msg.id)).toMatchObject({ text: 'também legível' });
    const parked = await waitFor(async () => (await t.db.query('SELECT * FROM parse_errors WHERE channel_id = $1', [channel.id])).rows[0], 'the body parked', 30_000);
    expect(parked.reason).toBe('an item could not be read (the rest of it was processed): body.entry[0].changes[0].value.messages[1].from must be a non-empty string, got undefined');
    expect(JSON.parse(Buffer.from(parked.body).toString('utf8'))).toEqual(body);
    expect(await count(t.db, 'SELECT 1 FROM messages WHERE external_id = $1', [unreadable.id])).toBe(0);
    expect(await inboundCount(labels)).toBe(before + 1);
    await t.db.query('DELETE FROM parse_errors WHERE channel_id = $1', [channel.id]); // the other tests expect none
  });

  it("parks a body without another number's changes, and a change it cannot read costs only itself", async () => {
    const [mine, theirs] = [phone(), phone()];
    const good = cloudText(mine, 'fica', { name: 'Cliente Daqui' });
    const foreign = cloudText(theirs, 'segredo de outro número', { name: 'Cliente de Lá' });
    const body = cloudBody({ contacts: [{ profile: { name: 'Cliente Daqui' }, wa_id: mine }], messages: [good.msg] });
    // Another number's change, in an entry of its own and beside ours; and a change with no value.
    const theirChange = cloudBody({ contacts: [{ profile: { name: 'Cliente de Lá' }, wa_id: theirs }], messages: [foreign.msg], phoneNumberId: '200000000000999' }).entry[0].changes[0];
    body.entry[0].changes.push(theirChange, { field: 'messages', value: null });
    body.entry.push({ id: 'WABA-OTHER', changes: [theirChange] });
    const labels = { provider: 'whatsapp_cloud', event: 'messages', result: 'malformed' };
    const before = await inboundCount(labels);

    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    expect(await readBack(good.msg.id)).toMatchObject({ text: 'fica' });
    const parked = await waitFor(async () => (await t.db.query('SELECT * FROM parse_errors WHERE channel_id = $1', [channel.id])).rows[0], 'the body parked', 30_000);
    expect(parked.reason).toBe('an item could not be read (the rest of it was processed): body.entry[0].changes[2].value must be an object, got null');
    const kept = Buffer.from(parked.body).toString('utf8');
    expect(kept).not.toContain('segredo de outro número');
    expect(kept).not.toContain('Cliente de Lá');
    expect(kept).not.toContain(theirs);
    // Their changes keep their places (the reason's path still points at its change) and their
    // number, nothing else.
    const stub = { field: 'messages', value: { metadata: { phone_number_id: '200000000000999' } } };
    expect(JSON.parse(kept)).toEqual({ ...body, entry: [{ ...body.entry[0], changes: [body.entry[0].changes[0], stub, { field: 'messages', value: null }] }, { id: 'WABA-OTHER', changes: [stub] }] });
    expect(await inboundCount(labels)).toBe(before + 1);
    await t.db.query('DELETE FROM parse_errors WHERE channel_id = $1', [channel.id]); // the other tests expect none
  });

  it('stores the messages of a change whose contacts it cannot read, and parks the body for the contacts', async () => {
    const p = phone();
    const m = cloudText(p, 'contatos ilegíveis');
    const body = cloudBody({ messages: [m.msg] });
    body.entry[0].changes[0].value.contacts = { wa_id: p, profile: { name: 'Sem Lista' } };
    const labels = { provider: 'whatsapp_cloud', event: 'messages', result: 'malformed' };
    const before = await inboundCount(labels);

    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    const stored = await readBack(m.msg.id);
    expect(stored).toMatchObject({ text: 'contatos ilegíveis' });
    expect((await contact(stored.contact_id)).phone).toBe(`+${p}`);
    const parked = await waitFor(async () => (await t.db.query('SELECT * FROM parse_errors WHERE channel_id = $1', [channel.id])).rows[0], 'the body parked', 30_000);
    expect(parked.reason).toBe('an item could not be read (the rest of it was processed): body.entry[0].changes[0].value.contacts must be an array, got object');
    expect(await inboundCount(labels)).toBe(before + 1);
    await t.db.query('DELETE FROM parse_errors WHERE channel_id = $1', [channel.id]); // the other tests expect none
  });

  it('records a reaction on its target', async () => {
    const p = phone();
    const target = wamid('rt');
    await reply(p, target);
    const { body } = cloudMessage(p, 'reaction', { reaction: { message_id: target, emoji: '👍' } });
    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    await waitFor(async () => JSON.stringify((await row(target)).reactions ?? {}).includes('👍'), 'reaction on target', 30_000);
  });

  it('takes a body of up to 3 MiB, as Meta sends up to 3 MB, and refuses a larger one with 413', async () => {
    const p = phone();
    const { msg, body } = cloudText(p, 'uma mensagem num corpo grande');
    // A field Meta might add, big enough to pass the 1 MiB the other routes take.
    body.entry[0].changes[0].value.padding = 'x'.repeat(2 * 1024 * 1024);
    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    await waitFor(() => row(msg.id), 'the message of the 2 MiB body stored', 30_000);
    body.entry[0].changes[0].value.padding = 'x'.repeat(3 * 1024 * 1024);
    const tooLarge = await postCloud(t.app, channel.id, body);
    expect(tooLarge.status).toBe(413);
    expect(tooLarge.json.detail).toBe('the request body is larger than the 3 MiB this route takes');
  });

  it('applies a status that arrives before its message once the message exists', async () => {
    const p = phone();
    const id = wamid('early');
    expect((await postCloud(t.app, channel.id, cloudBody({ statuses: [cloudStatus(id, 'delivered', p, { ts: Math.floor(Date.now() / 1000) + 5 })] }))).status).toBe(200);
    const messageId = await reply(p, id);
    await waitFor(async () => (await row(id))?.status === 'delivered', 'the early status applied', 30_000);
    expect(await eventsOf(messageId, 'message.delivered')).toHaveLength(1);
  });

  it('keeps the delivery time of a delivered status that comes after the read one, moving nothing back', async () => {
    const p = phone();
    const id = wamid('unordered');
    const messageId = await reply(p, id);
    const now = Math.floor(Date.now() / 1000);
    // Read first (which fills in the delivery with the read time), then the delivery, earlier.
    await postCloud(t.app, channel.id, cloudBody({ statuses: [cloudStatus(id, 'read', p, { ts: now + 20 })] }));
    await waitFor(async () => (await row(id))?.status === 'read', 'read', 30_000);
    expect(new Date((await row(id)).delivered_at).toISOString()).toBe(at(now + 20));
    const unchanged = { provider: 'whatsapp_cloud', event: 'statuses', result: 'unchanged' };
    const before = await inboundCount(unchanged);
    await postCloud(t.app, channel.id, cloudBody({ statuses: [cloudStatus(id, 'delivered', p, { ts: now + 5 })] }));
    await waitFor(async () => (await inboundCount(unchanged)) > before, 'the late delivery seen', 30_000);
    const m = await row(id);
    expect(m.status).toBe('read');
    expect(new Date(m.delivered_at).toISOString()).toBe(at(now + 5));
    expect(new Date(m.read_at).toISOString()).toBe(at(now + 20));
    // Never forward: a copy of the delivery dated later changes nothing.
    await postCloud(t.app, channel.id, cloudBody({ statuses: [cloudStatus(id, 'delivered', p, { ts: now + 30 })] }));
    await waitFor(async () => (await inboundCount(unchanged)) > before + 1, 'the copy seen', 30_000);
    expect(new Date((await row(id)).delivered_at).toISOString()).toBe(at(now + 5));
    expect(await eventsOf(messageId, 'message.delivered')).toHaveLength(0);
    expect(await eventsOf(messageId, 'message.read')).toHaveLength(1);
  });

  it("moves a reply to failed on a failed status, with Meta's code and title, and never back", async () => {
    const p = phone();
    const id = wamid('fail');
    const messageId = await reply(p, id);
    const errors = [{ code: 131026, title: 'Message undeliverable', message: 'Message undeliverable', error_data: { details: 'Receiver is incapable of receiving this message' } }];
    const now = Math.floor(Date.now() / 1000);
    await postCloud(t.app, channel.id, cloudBody({ statuses: [cloudStatus(id, 'failed', p, { ts: now + 1, errors })] }));
    const m = await waitFor(async () => ((await row(id))?.status === 'failed' ? row(id) : undefined), 'failed', 30_000);
    expect(m.error).toMatchObject({ code: 131026, title: 'Message undeliverable', details: 'Receiver is incapable of receiving this message' });
    expect((await t.api('GET', `/messages/${messageId}`)).json).toMatchObject({
      status: 'failed', error: { code: '131026', title: 'Message undeliverable', message: 'Message undeliverable', details: 'Receiver is incapable of receiving this message' },
    });
    expect(await eventsOf(messageId, 'message.failed')).toMatchObject([{ error_code: '131026', error: 'Message undeliverable' }]);
    // A late `delivered` does not resurrect it.
    const before = await inboundCount({ provider: 'whatsapp_cloud', event: 'statuses', result: 'unchanged' });
    await postCloud(t.app, channel.id, cloudBody({ statuses: [cloudStatus(id, 'delivered', p, { ts: now + 2 })] }));
    await waitFor(async () => (await inboundCount({ provider: 'whatsapp_cloud', event: 'statuses', result: 'unchanged' })) > before, 'late status seen', 30_000);
    expect((await row(id)).status).toBe('failed');
    // Nor does one dated before our own send time give it a delivery time.
    const sentAt = (await row(id)).sent_at;
    await postCloud(t.app, channel.id, cloudBody({ statuses: [cloudStatus(id, 'delivered', p, { ts: now - 60 }), cloudStatus(id, 'sent', p, { ts: now - 60 })] }));
    await waitFor(async () => (await inboundCount({ provider: 'whatsapp_cloud', event: 'statuses', result: 'unchanged' })) > before + 2, 'older statuses seen', 30_000);
    expect(await row(id)).toMatchObject({ status: 'failed', delivered_at: null, read_at: null, sent_at: sentAt });
  });

  it('refuses a wrong, missing or foreign signature with 401 and stores nothing', async () => {
    const p = phone();
    const bad = cloudText(p, 'forjado');
    const raw = JSON.stringify(bad.body);
    expect((await postCloud(t.app, channel.id, raw, 'another-app-secret')).status).toBe(401);
    expect((await postCloud(t.app, channel.id, raw, null)).status).toBe(401);
    // Signed correctly, then changed by one byte on the way.
    const tampered = await t.app.inject({
      method: 'POST', url: `/api/v1/webhooks/whatsapp/${channel.id}`, payload: raw.replace('forjado', 'forjadO'),
      headers: { 'content-type': 'application/json', 'x-hub-signature-256': sign(raw, APP_SECRET) },
    });
    expect(tampered.statusCode).toBe(401);
    // A good post after the bad ones is processed; the bad ones never were.
    const good = cloudText(p, 'verdadeiro');
    expect((await postCloud(t.app, channel.id, good.body)).status).toBe(200);
    await readBack(good.msg.id);
    expect(await row(bad.msg.id)).toBeUndefined();
  });

  it('answers the verification handshake only with the right token', async () => {
    const get = (query: Record<string, string>) => t.app.inject({ method: 'GET', url: `/api/v1/webhooks/whatsapp/${channel.id}`, query });
    const ok = await get({ 'hub.mode': 'subscribe', 'hub.verify_token': VERIFY_TOKEN, 'hub.challenge': '1158201444' });
    expect(ok.statusCode).toBe(200);
    expect(ok.headers['content-type']).toMatch(/text\/plain/);
    expect(ok.body).toBe('1158201444');
    expect((await get({ 'hub.mode': 'subscribe', 'hub.verify_token': 'wrong', 'hub.challenge': '1' })).statusCode).toBe(403);
    expect((await get({ 'hub.mode': 'unsubscribe', 'hub.verify_token': VERIFY_TOKEN, 'hub.challenge': '1' })).statusCode).toBe(403);
    expect((await get({ 'hub.mode': 'subscribe', 'hub.challenge': '1' })).statusCode).toBe(403);
  });

  it('processes a message and a status posted twice once: one message, status applied once, no duplicate events', async () => {
    const p = phone();
    const earlier = wamid('earlier');
    const earlierId = await reply(p, earlier);
    const { msg } = cloudText(p, 'Recebi, obrigado');
    const body = cloudBody({ contacts: [{ profile: { name: 'Dupla' }, wa_id: p }], messages: [msg], statuses: [cloudStatus(earlier, 'delivered', p, { ts: Math.floor(Date.now() / 1000) })] });
    const dupBefore = await inboundCount({ provider: 'whatsapp_cloud', event: 'messages', result: 'duplicate' });
    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    const m = await readBack(msg.id);
    await waitFor(async () => (await row(earlier))?.status === 'delivered', 'status applied', 30_000);
    await waitFor(async () => (await inboundCount({ provider: 'whatsapp_cloud', event: 'messages', result: 'duplicate' })) > dupBefore, 'the second copy seen as a duplicate', 30_000);
    expect(await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1 AND external_id = $2', [channel.id, msg.id])).toBe(1);
    expect(await eventsOf(m.id, 'message.received')).toHaveLength(1);
    expect(await eventsOf(earlierId, 'message.delivered')).toHaveLength(1);
    const [s] = (await t.db.query('SELECT messages_from_contact FROM sessions WHERE id = $1', [m.session_id])).rows;
    expect(s.messages_from_contact).toBe(1);
  });

  it('lets a project keep WAHA and Cloud channels side by side, never showing Cloud secrets', async () => {
    await t.createChannel();
    const list = await t.api('GET', '/channels');
    expect(new Set(list.json.data.map((c: any) => c.type))).toEqual(new Set(['waha', 'whatsapp_cloud']));
    const text = JSON.stringify(list.json);
    for (const secret of [APP_SECRET, VERIFY_TOKEN, 'EAAG-cloud-test-access-token']) expect(text).not.toContain(secret);
    const stored = (await t.db.query('SELECT config::text AS config, secrets::text AS secrets FROM channels WHERE id = $1', [channel.id])).rows[0];
    expect(`${stored.config}${stored.secrets}`).not.toContain(APP_SECRET);
  });
});
