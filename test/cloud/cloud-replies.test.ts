// Replying through the Cloud API: POST /messages → queued (202) → the sender calls a fake Graph API
// (a real HTTP server the test scripts) → sent with the returned wamid, retried on throttling and
// 5xx, or failed with a reason a person understands (the 24-hour window).
import { describe, expect, it } from 'vitest';
import { classifyGraphFailure, cloudConnectionOf, WINDOW_CLOSED_REASON } from '../../src/channels/cloud.client.ts';
import { waitFor } from '../support/env.ts';
import { events, rows } from '../conversations/harness.ts';
import { ACCESS_TOKEN, PHONE_NUMBER_ID, cloudText, createCloudChannel, graphError, postCloud, sendAccepted, wamid } from './harness.ts';
import { startCloudReplyWorld } from './reply-world.ts';
import { newPhone } from '../support/phones.ts';

const { world, db, tenant, graph, channel, message, sendsTo, settled } = await startCloudReplyWorld();

async function send(body: Record<string, unknown>, channelId = channel.id): Promise<string> {
  const r = await tenant.api('POST', '/messages', { channel_id: channelId, type: 'text', ...body });
  expect(r.status, JSON.stringify(r.json)).toBe(202);
  return r.json.id;
}

describe('POST /messages through the Cloud API', () => {
  it('sends a text to /{version}/{phone_number_id}/messages with the bearer token and stores the wamid', async () => {
    const phone = newPhone();
    const out = wamid('out');
    graph.respond((c) => (c.body?.to === phone ? sendAccepted(phone, out) : undefined));
    const id = await send({ phone: `+${phone}`, text: 'Olá! Seu pedido saiu.' });
    const m = await settled(id);
    expect(m.status).toBe('sent');
    expect(m.external_id).toBe(out);
    const [call] = sendsTo(phone);
    expect(call.method).toBe('POST');
    expect(call.path).toBe(`/v21.0/${PHONE_NUMBER_ID}/messages`);
    expect(call.headers.authorization).toBe(`Bearer ${ACCESS_TOKEN}`);
    expect(call.headers['content-type']).toMatch(/application\/json/);
    expect(call.body).toEqual({ messaging_product: 'whatsapp', recipient_type: 'individual', to: phone, type: 'text', text: { body: 'Olá! Seu pedido saiu.' } });
    const sent = await events(db, { aggregateId: id, type: 'message.sent' });
    expect(sent).toHaveLength(1);
    expect(sent[0].data).toMatchObject({ message_id: id, status: 'sent', external_id: out });
    // Meta's statuses for the wamid then move the reply forward through the same ingress.
    await postCloud(world.app, channel.id, { object: 'whatsapp_business_account', entry: [{ id: '1', changes: [{ field: 'messages', value: { messaging_product: 'whatsapp', metadata: { phone_number_id: PHONE_NUMBER_ID }, statuses: [{ id: out, status: 'read', timestamp: String(Math.floor(Date.now() / 1000)), recipient_id: phone }] } }] }] });
    await waitFor(async () => (await message(id)).status === 'read', 'the reply to be read', 30_000);
    // Nothing went wrong: the API says so with an explicit null.
    const shown = await tenant.api('GET', `/messages/${id}`);
    expect(shown.status).toBe(200);
    expect(shown.json).toMatchObject({ id, status: 'read', error: null });
  });

  it('asks for a link preview when the text has a link', async () => {
    const phone = newPhone();
    const m = await settled(await send({ phone: `+${phone}`, text: 'Rastreio: https://example.com/t/1' }));
    expect(m.status).toBe('sent');
    expect(sendsTo(phone)[0].body.text).toEqual({ body: 'Rastreio: https://example.com/t/1', preview_url: true });
  });

  it('sends media by link with caption and file name, and a reply with its context', async () => {
    const phone = newPhone();
    // The customer writes first (through the signed ingress), so there is a wamid to reply to.
    const inbound = cloudText(phone, 'Pode mandar o catálogo?', { ts: Math.floor(Date.now() / 1000) });
    expect((await postCloud(world.app, channel.id, inbound.body)).status).toBe(200);
    const original = await waitFor(async () => (await rows(db, 'SELECT * FROM messages WHERE channel_id = $1 AND external_id = $2', [channel.id, inbound.msg.id]))[0], 'inbound stored', 30_000);

    const image = await send({ contact_id: original.contact_id, type: 'image', media_url: 'https://cdn.example.com/p/azul.jpg', caption: 'Modelo azul', reply_to: original.id });
    const doc = await send({ contact_id: original.contact_id, type: 'document', media_url: 'https://cdn.example.com/catalogo.pdf', caption: 'Catálogo', filename: 'catalogo-2025.pdf' });
    const audio = await send({ contact_id: original.contact_id, type: 'audio', media_url: 'https://cdn.example.com/a.ogg' });
    const video = await send({ contact_id: original.contact_id, type: 'video', media_url: 'https://cdn.example.com/v.mp4', caption: 'Veja' });
    for (const id of [image, doc, audio, video]) expect((await settled(id)).status).toBe('sent');

    const byType = Object.fromEntries(sendsTo(phone).map((c) => [c.body.type, c.body]));
    const base = { messaging_product: 'whatsapp', recipient_type: 'individual', to: phone };
    expect(byType.image).toEqual({ ...base, type: 'image', image: { link: 'https://cdn.example.com/p/azul.jpg', caption: 'Modelo azul' }, context: { message_id: inbound.msg.id } });
    expect(byType.document).toEqual({ ...base, type: 'document', document: { link: 'https://cdn.example.com/catalogo.pdf', caption: 'Catálogo', filename: 'catalogo-2025.pdf' } });
    // Meta refuses a caption on audio.
    expect(byType.audio).toEqual({ ...base, type: 'audio', audio: { link: 'https://cdn.example.com/a.ogg' } });
    expect(byType.video).toEqual({ ...base, type: 'video', video: { link: 'https://cdn.example.com/v.mp4', caption: 'Veja' } });
  });

  it('ends a reply outside the 24-hour window failed, with a reason a person understands and message.failed', async () => {
    const phone = newPhone();
    graph.respond((c) =>
      c.body?.to === phone
        ? graphError(400, 131047, '(#131047) Re-engagement message', 'Message failed to send because more than 24 hours have passed since the customer last replied to this number.')
        : undefined,
    );
    const id = await send({ phone: `+${phone}`, text: 'Ainda tem interesse?' });
    const m = await settled(id);
    expect(m.status).toBe('failed');
    expect(m.external_id).toBeNull();
    expect(m.error).toMatchObject({ message: WINDOW_CLOSED_REASON, code: '131047' });
    // Final at once: no retry would ever pass.
    expect(sendsTo(phone)).toHaveLength(1);
    const failed = await events(db, { aggregateId: id, type: 'message.failed' });
    expect(failed).toHaveLength(1);
    expect(failed[0].data).toMatchObject({ message_id: id, status: 'failed', error: WINDOW_CLOSED_REASON, error_code: '131047' });
    // The API says why, on the message and in the list.
    const shown = await tenant.api('GET', `/messages/${id}`);
    expect(shown.status).toBe(200);
    // Meta's details as it gave them (no error_user_title here: no title).
    const details = 'Message failed to send because more than 24 hours have passed since the customer last replied to this number.';
    expect(shown.json).toMatchObject({ id, status: 'failed', error: { code: '131047', title: null, message: WINDOW_CLOSED_REASON, details } });
    const listed = await tenant.api('GET', `/messages?contact_id=${m.contact_id}`);
    expect(listed.json.data.find((r: any) => r.id === id)?.error).toEqual(shown.json.error);
  });

  it('retries a 500 and ends sent when Meta answers 200 next', async () => {
    const phone = newPhone();
    const out = wamid('out');
    let n = 0;
    graph.respond((c) => (c.body?.to !== phone ? undefined : ++n === 1 ? graphError(500, 2, 'Service temporarily unavailable') : sendAccepted(phone, out)));
    const id = await send({ phone: `+${phone}`, text: 'Tentando de novo' });
    const m = await settled(id);
    expect(m).toMatchObject({ status: 'sent', external_id: out });
    expect(sendsTo(phone)).toHaveLength(2);
    expect(await events(db, { aggregateId: id, type: 'message.failed' })).toHaveLength(0);
    expect(await events(db, { aggregateId: id, type: 'message.sent' })).toHaveLength(1);
  });

  it("retries Meta's throttling answers even when wrapped in a 400", async () => {
    const phone = newPhone();
    let n = 0;
    graph.respond((c) => (c.body?.to !== phone ? undefined : ++n === 1 ? graphError(400, 130429, '(#130429) Rate limit hit') : undefined));
    const m = await settled(await send({ phone: `+${phone}`, text: 'Devagar' }));
    expect(m.status).toBe('sent');
    expect(sendsTo(phone)).toHaveLength(2);
  });

  it("fails for good on another 4xx, keeping Meta's words", async () => {
    const phone = newPhone();
    graph.respond((c) => (c.body?.to === phone ? graphError(400, 131009, '(#131009) Parameter value is not valid', 'Recipient phone number not in allowed list') : undefined));
    const m = await settled(await send({ phone: `+${phone}`, text: 'x' }));
    expect(m.status).toBe('failed');
    expect(m.error.code).toBe('131009');
    expect(m.error.message).toContain('Parameter value is not valid');
    expect(m.error.message).toContain('Recipient phone number not in allowed list');
    expect(sendsTo(phone)).toHaveLength(1);
  });

  it("keeps Meta's title and details of a refused send apart, as the API shows them", async () => {
    const phone = newPhone();
    const refusal = graphError(400, 131026, '(#131026) Message Undeliverable', 'The recipient is not on WhatsApp.');
    (refusal.body as any).error.error_user_title = 'Message Undeliverable';
    graph.respond((c) => (c.body?.to === phone ? refusal : undefined));
    const id = await send({ phone: `+${phone}`, text: 'x' });
    expect((await settled(id)).status).toBe('failed');
    const shown = (await tenant.api('GET', `/messages/${id}`)).json;
    expect(shown.error).toMatchObject({ code: '131026', title: 'Message Undeliverable', details: 'The recipient is not on WhatsApp.' });
    expect(shown.error.message).toContain('Message Undeliverable');
  });

  it('uses the channel api_version', async () => {
    const other = await createCloudChannel(tenant.api, { api_base_url: graph.url, api_version: 'v20.0', phone_number_id: '200000000000777' });
    const phone = newPhone();
    const m = await settled(await send({ phone: `+${phone}`, text: 'Versão' }, other.id));
    expect(m.status).toBe('sent');
    expect(sendsTo(phone)[0].path).toBe('/v20.0/200000000000777/messages');
  });
});

describe('Graph answer classification', () => {
  const answer = (status: number, body: unknown) => ({ status, json: body, text: JSON.stringify(body), retryAfter: null });
  it.each([
    [500, undefined, true],
    [503, 1, true],
    [429, 4, true],
    [400, 80007, true],
    [400, 131056, true],
    [400, 100, false],
    [401, 190, false],
    [400, 131047, false],
  ])('status %i with code %s → retry %s', (status, code, retry) => {
    expect(classifyGraphFailure(answer(status, code === undefined ? {} : { error: { code, message: 'm' } })).retry).toBe(retry);
  });

  it('defaults the Graph base URL and version', () => {
    expect(cloudConnectionOf({ config: { phone_number_id: '1' }, secrets: { access_token: 't' } })).toMatchObject({ baseUrl: 'https://graph.facebook.com', version: 'v21.0' });
    expect(cloudConnectionOf({ config: { phone_number_id: '1', api_version: '19.0' }, secrets: {} }).version).toBe('v19.0');
  });
});
