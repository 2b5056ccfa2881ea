// Template messages through the Cloud API: POST /messages with type template → queued (202) → the
// sender posts Meta's template body to a fake Graph API → sent with the wamid. The only message a
// business may send a customer who has not written in 24 hours. WAHA channels refuse them.
import { describe, expect, it } from 'vitest';
import { cloudSender } from '../../src/channels/cloud.client.ts';
import { wahaSender } from '../../src/channels/waha.client.ts';
import { events, rows, startFakeWaha, wahaMessage } from '../conversations/harness.ts';
import { waitFor } from '../support/env.ts';
import { cloudMessage, cloudText, createCloudChannel, graphError, postCloud, sendAccepted, wamid } from './harness.ts';
import { startCloudReplyWorld } from './reply-world.ts';
import { newPhone } from '../support/phones.ts';

const { world, db, tenant, graph, channel, message, sendsTo, settled } = await startCloudReplyWorld();

const ORDER_SHIPPED = {
  name: 'pedido_enviado',
  language: 'pt_BR',
  components: [
    { type: 'header', parameters: [{ type: 'image', image: { link: 'https://cdn.example.com/caixa.jpg' } }] },
    { type: 'body', parameters: [{ type: 'text', text: 'Joana' }, { type: 'text', text: '#4521' }] },
    { type: 'button', sub_type: 'url', index: '0', parameters: [{ type: 'text', text: '4521' }] },
  ],
};

describe('template messages', () => {
  it("sends Meta's template body with the parameters as given, and shows the template on the message", async () => {
    const phone = newPhone();
    const out = wamid('tpl');
    graph.respond((c) => (c.body?.to === phone ? sendAccepted(phone, out) : undefined));
    const r = await tenant.api('POST', '/messages', { channel_id: channel.id, phone: `+${phone}`, type: 'template', template: ORDER_SHIPPED });
    expect(r.status, JSON.stringify(r.json)).toBe(202);
    const m = await settled(r.json.id);
    expect(m.status).toBe('sent');
    expect(m.external_id).toBe(out);
    expect(sendsTo(phone).map((c) => c.body)).toEqual([
      {
        messaging_product: 'whatsapp',
        recipient_type: 'individual',
        to: phone,
        type: 'template',
        template: { name: 'pedido_enviado', language: { code: 'pt_BR' }, components: ORDER_SHIPPED.components },
      },
    ]);
    const shown = await tenant.api('GET', `/messages/${r.json.id}`);
    expect(shown.json).toMatchObject({ type: 'template', text: null, status: 'sent', direction: 'outbound', metadata: { source: 'api', template: ORDER_SHIPPED } });
    expect(shown.json.media ?? null).toBeNull();
    const sent = await events(db, { aggregateId: r.json.id, type: 'message.sent' });
    expect(sent).toHaveLength(1);
    expect(sent[0].data).toMatchObject({ type: 'template', external_id: out, text: null });
  });

  it('sends a template without parameters without a components key, and keeps no field Meta does not take', async () => {
    const phone = newPhone();
    const r = await tenant.api('POST', '/messages', { channel_id: channel.id, phone: `+${phone}`, type: 'template', template: { name: 'hello_world', language: 'en_US' } });
    expect(r.status, JSON.stringify(r.json)).toBe(202);
    expect((await settled(r.json.id)).status).toBe('sent');
    expect(sendsTo(phone)[0].body.template).toEqual({ name: 'hello_world', language: { code: 'en_US' } });
    expect((await message(r.json.id)).metadata.template).toEqual({ name: 'hello_world', language: 'en_US' });
  });

  it("fails for good with Meta's words when Meta refuses the template", async () => {
    const phone = newPhone();
    graph.respond((c) => (c.body?.to === phone ? graphError(404, 132001, '(#132001) Template name does not exist in the translation', 'template name (promo_x) does not exist in pt_BR') : undefined));
    const r = await tenant.api('POST', '/messages', { channel_id: channel.id, phone: `+${phone}`, type: 'template', template: { name: 'promo_x', language: 'pt_BR' } });
    expect(r.status).toBe(202);
    const m = await settled(r.json.id);
    expect(m.status).toBe('failed');
    expect(m.error).toMatchObject({ code: '132001', details: 'template name (promo_x) does not exist in pt_BR' });
    expect(sendsTo(phone)).toHaveLength(1);
  });

  it('refuses a template message that is not only its template, and a template on another type', async () => {
    const phone = `+${newPhone()}`;
    const base = { channel_id: channel.id, phone };
    const tpl = { name: 'hello_world', language: 'en_US' };
    const cases: Array<[Record<string, unknown>, string | undefined]> = [
      [{ type: 'template' }, 'template'],
      [{ type: 'template', template: tpl, text: 'oi' }, 'text'],
      [{ type: 'template', template: tpl, media_url: 'https://cdn.example.com/a.jpg' }, 'media_url'],
      [{ type: 'template', template: tpl, caption: 'x' }, 'caption'],
      [{ type: 'template', template: tpl, filename: 'a.pdf' }, 'filename'],
      [{ type: 'template', template: tpl, mimetype: 'image/jpeg' }, 'mimetype'],
      [{ type: 'template', template: tpl, reply_to: 'wamid.X' }, 'reply_to'],
      [{ type: 'text', text: 'oi', template: tpl }, 'template'],
      [{ type: 'template', template: { ...tpl, components: [{ type: 'body', parameters: [{ type: 'text', text: 'x'.repeat(17 * 1024) }] }] } }, 'template.components'],
      // The schema's own checks: a name as WhatsApp Manager has them, a language code, no other fields.
      [{ type: 'template', template: { name: 'Promo Nov', language: 'pt_BR' } }, undefined],
      [{ type: 'template', template: { name: 'promo', language: 'português' } }, undefined],
      [{ type: 'template', template: { ...tpl, namespace: 'x' } }, undefined],
      [{ type: 'template', template: { ...tpl, components: [{ parameters: [] }] } }, undefined],
    ];
    const before = (await rows(db, 'SELECT count(*)::int AS n FROM messages WHERE channel_id = $1', [channel.id]))[0].n;
    for (const [body, field] of cases) {
      const r = await tenant.api('POST', '/messages', { ...base, ...body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      if (field) expect(r.json.errors?.map((e: { field: string }) => e.field), JSON.stringify(body)).toContain(field);
    }
    expect((await rows(db, 'SELECT count(*)::int AS n FROM messages WHERE channel_id = $1', [channel.id]))[0].n).toBe(before);
  });

  it('refuses a template through a WAHA channel (422), storing and sending nothing', async () => {
    const waha = await startFakeWaha();
    const wahaChannel = await world.createChannel(waha.url);
    const r = await tenant.api('POST', '/messages', { channel_id: wahaChannel.id, phone: `+${newPhone()}`, type: 'template', template: { name: 'hello_world', language: 'en_US' } });
    expect(r.status).toBe(422);
    expect(r.json.detail).toContain('Cloud API');
    expect(r.json.errors).toEqual([{ field: 'type', message: 'not for this channel' }]);
    expect((await rows(db, 'SELECT count(*)::int AS n FROM messages WHERE channel_id = $1', [wahaChannel.id]))[0].n).toBe(0);
    expect(waha.calls).toHaveLength(0);
  });
});

describe('the senders and a template', () => {
  const content = { type: 'template' as const, text: null, media: null, replyToExternalId: null };
  it('the Cloud sender never sends a template message without its template as something else', async () => {
    const before = graph.calls.length;
    const cloud = { id: channel.id, type: 'whatsapp_cloud' as const, config: { api_base_url: graph.url, phone_number_id: '1' }, secrets: { access_token: 'token-123456789' } };
    const outcome = await cloudSender.send(cloud, { phone: '+5511900000001', waLid: null }, { ...content, template: null });
    expect(outcome).toMatchObject({ ok: false, retry: false, code: 'unsupported' });
    expect(graph.calls.length).toBe(before);
  });
  it('the WAHA sender refuses a template for good without calling WAHA', async () => {
    const waha = await startFakeWaha();
    const channel = { id: 'c', type: 'waha' as const, config: { base_url: waha.url, session: 'default' }, secrets: { api_key: 'k' } };
    const outcome = await wahaSender.send(channel, { phone: '+5511900000001', waLid: null }, { ...content, template: { name: 'hello_world', language: 'en_US' } });
    expect(outcome).toMatchObject({ ok: false, retry: false, code: 'unsupported' });
    expect(waha.calls).toHaveLength(0);
  });
});

describe("a session's reply window", () => {
  const sessionOf = async (channelId: string, phone: string) => {
    const [row] = await rows(db, `SELECT s.id FROM sessions s JOIN contacts k ON k.id = s.contact_id WHERE s.channel_id = $1 AND k.phone = $2 ORDER BY s.started_at DESC LIMIT 1`, [channelId, `+${phone}`]);
    return row?.id as string | undefined;
  };

  it("is 24 hours after the contact's latest message on a Cloud channel; our replies do not move it", async () => {
    const phone = newPhone();
    const wrote = Math.floor(Date.now() / 1000) - 2 * 3600;
    expect((await postCloud(world.app, channel.id, cloudText(phone, 'Oi, ainda tem?', { ts: wrote - 20 }).body)).status).toBe(200);
    expect((await postCloud(world.app, channel.id, cloudText(phone, 'Alô?', { ts: wrote }).body)).status).toBe(200);
    const id = await waitFor(async () => {
      const s = await sessionOf(channel.id, phone);
      return s && (await tenant.api('GET', `/sessions/${s}`)).json.messages_from_contact === 2 ? s : undefined;
    }, 'both messages stored', 30_000);
    const until = new Date((wrote + 24 * 3600) * 1000).toISOString();
    expect((await tenant.api('GET', `/sessions/${id}`)).json.reply_window_until).toBe(until);
    // A reply goes out; the window is the customer's to open, not ours.
    graph.respond((c) => (c.body?.to === phone ? sendAccepted(phone) : undefined));
    const r = await tenant.api('POST', '/messages', { channel_id: channel.id, phone: `+${phone}`, type: 'text', text: 'Tem sim!' });
    expect((await settled(r.json.id)).status).toBe('sent');
    expect((await tenant.api('GET', `/sessions/${id}`)).json.reply_window_until).toBe(until);
    // Two hours on, the reply opened a session of its own (the first had timed out): the window is
    // the conversation's, the same on both.
    const contactId = (await tenant.api('GET', `/sessions/${id}`)).json.contact_id;
    const listed = await tenant.api('GET', `/sessions?contact_id=${contactId}`);
    expect(listed.json.data.map((x: { reply_window_until: string }) => x.reply_window_until)).toEqual([until, until]);
  });

  it("counts only the contact's own messages through this channel: not another channel's, not WhatsApp's system notices", async () => {
    const phone = newPhone();
    const now = Math.floor(Date.now() / 1000);
    const wrote = now - 3 * 3600;
    expect((await postCloud(world.app, channel.id, cloudText(phone, 'Oi', { ts: wrote }).body)).status).toBe(200);
    // Later: the same person through another Cloud channel of the project, and a system notice here.
    const other = await createCloudChannel(tenant.api, { api_base_url: graph.url });
    expect((await postCloud(world.app, other.id, cloudText(phone, 'Oi de novo', { ts: now - 600 }).body)).status).toBe(200);
    const notice = cloudMessage(phone, 'system', { system: { body: 'User A changed from +55 to +56', type: 'user_changed_number', new_wa_id: '5531999999999' } }, { ts: now - 300 });
    expect((await postCloud(world.app, channel.id, notice.body)).status).toBe(200);
    await waitFor(async () => (await rows(db, 'SELECT 1 FROM messages WHERE external_id = $1', [notice.msg.id])).length === 1, 'the notice stored', 30_000);
    await waitFor(() => sessionOf(other.id, phone), 'the other channel’s session', 30_000);
    const here = await waitFor(() => sessionOf(channel.id, phone), 'this channel’s session');
    const sessions = (await tenant.api('GET', `/sessions?contact_id=${(await tenant.api('GET', `/sessions/${here}`)).json.contact_id}`)).json.data;
    const byChannel = (id: string) => sessions.filter((s: { channel_id: string }) => s.channel_id === id).map((s: { reply_window_until: string }) => s.reply_window_until);
    expect(new Set(byChannel(channel.id))).toEqual(new Set([new Date((wrote + 24 * 3600) * 1000).toISOString()]));
    expect(byChannel(other.id)).toEqual([new Date((now - 600 + 24 * 3600) * 1000).toISOString()]);
  });

  it('is null when the contact never wrote, and on a WAHA channel', async () => {
    const phone = newPhone();
    graph.respond((c) => (c.body?.to === phone ? sendAccepted(phone) : undefined));
    const tpl = await tenant.api('POST', '/messages', { channel_id: channel.id, phone: `+${phone}`, type: 'template', template: { name: 'hello_world', language: 'en_US' } });
    expect((await settled(tpl.json.id)).status).toBe('sent');
    const opened = await waitFor(() => sessionOf(channel.id, phone), 'the session our template opened');
    expect((await tenant.api('GET', `/sessions/${opened}`)).json.reply_window_until).toBeNull();

    const waha = await startFakeWaha();
    const wahaChannel = await world.createChannel(waha.url);
    const other = newPhone();
    expect(await world.postWebhook(wahaChannel, wahaMessage(other, 'Oi', { ts: Math.floor(Date.now() / 1000) }))).toBe(200);
    const s = await waitFor(() => sessionOf(wahaChannel.id, other), 'the WAHA session');
    expect((await tenant.api('GET', `/sessions/${s}`)).json.reply_window_until).toBeNull();
  });
});
