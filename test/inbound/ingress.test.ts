// The ingress: who may post (token, HMAC, Meta signature), what is refused at the door (4xx, never
// 5xx), what is parked as a parse error later, and that valid traffic keeps flowing around bad.
import { createHmac, randomBytes } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/domain/ids.ts';
import { waitFor } from '../support/env.ts';
import { parseCloudWebhook } from '../../src/inbound/whatsapp-cloud/cloud.parser.ts';
import { count, fixture, fixtureNames, messageByKey, startInbound, wahaText, type Channel, type Inbound } from './harness.ts';

let t: Inbound;
let ch: Channel;

beforeAll(async () => {
  t = await startInbound();
  ch = await t.createChannel();
});

const inject = (url: string, payload: string | Buffer, headers: Record<string, string> = { 'content-type': 'application/json' }) =>
  t.app.inject({ method: 'POST', url, payload, headers });

describe('who may post', () => {
  it('accepts the channel token as ?token= or X-Webhook-Token, and answers with the event id', async () => {
    const byQuery = await t.post(ch, wahaText('5511966660001', 'a', { id: 'TOKQ01' }));
    expect(byQuery.status).toBe(200);
    expect(byQuery.json).toEqual({ status: 'queued', event_id: expect.stringMatching(/^[0-9a-f-]{36}$/) });
    const byHeader = await t.post(ch, wahaText('5511966660001', 'b', { id: 'TOKH01' }), { token: null, headers: { 'x-webhook-token': ch.token } });
    expect(byHeader.status).toBe(200);
    await waitFor(() => messageByKey(t.db, ch.id, 'TOKH01'), 'header-token message stored');
  });

  it('refuses a missing or wrong token with 401, an unknown channel with 404', async () => {
    const body = wahaText('5511966660001', 'x', { id: 'TOKBAD01' });
    expect((await t.post(ch, body, { token: null })).status).toBe(401);
    expect((await t.post(ch, body, { token: `${ch.token}x` })).status).toBe(401);
    expect((await t.post(ch, body, { token: '' })).status).toBe(401);
    const flipped = `${ch.token.slice(0, -1)}${ch.token.endsWith('A') ? 'B' : 'A'}`; // same length, one character off
    expect((await t.post(ch, body, { token: flipped })).status).toBe(401);
    expect((await t.post(ch, body, { token: ch.token.slice(0, -1) })).status).toBe(401);
    expect((await t.post({ ...ch, id: uuidv7() }, body)).status).toBe(404);
    expect((await t.post({ ...ch, id: 'not-a-uuid' }, body)).status).toBe(404);
    expect(await messageByKey(t.db, ch.id, 'TOKBAD01')).toBeUndefined();
  });

  it('requires the WAHA HMAC over the exact bytes when the channel has an hmac key', async () => {
    const signed = await t.createChannel({ hmac_key: 'hmac-secret-1' });
    const body = JSON.stringify(wahaText('5511966660002', 'assinada', { id: 'HMAC01' }));
    expect((await t.post(signed, body)).status).toBe(401); // no signature
    expect((await t.post(signed, body, { hmacKey: 'another-key' })).status).toBe(401);
    const sig = createHmac('sha512', 'hmac-secret-1').update(body).digest('hex');
    expect((await t.post(signed, body.replace('assinada', 'alterada'), { headers: { 'x-webhook-hmac': sig } })).status).toBe(401);
    // The right signature with one hex digit more (a decoder drops an odd last digit), or cut short.
    expect((await t.post(signed, body, { headers: { 'x-webhook-hmac': `${sig}a` } })).status).toBe(401);
    expect((await t.post(signed, body, { headers: { 'x-webhook-hmac': sig.slice(0, -2) } })).status).toBe(401);
    expect((await t.post(signed, body, { headers: { 'x-webhook-hmac': sig.toUpperCase() } })).status).toBe(200);
    expect((await t.post(signed, body, { hmacKey: 'hmac-secret-1', headers: { 'x-webhook-hmac-algorithm': 'sha512' } })).status).toBe(200);
    await waitFor(() => messageByKey(t.db, signed.id, 'HMAC01'), 'signed message stored');

    // A changed key applies at once (the channel cache is invalidated on change).
    expect((await t.api('PATCH', `/channels/${signed.id}`, { config: { hmac_key: 'hmac-secret-2' } })).status).toBe(200);
    expect((await t.post(signed, body, { hmacKey: 'hmac-secret-1' })).status).toBe(401);
    expect((await t.post(signed, body, { hmacKey: 'hmac-secret-2' })).status).toBe(200);
  });

  it('refuses webhooks for a deleted channel at once', async () => {
    const gone = await t.createChannel();
    expect((await t.post(gone, wahaText('5511966660003', 'antes', { id: 'DEL01' }))).status).toBe(200);
    expect((await t.api('DELETE', `/channels/${gone.id}`)).status).toBe(204);
    expect((await t.post(gone, wahaText('5511966660003', 'depois', { id: 'DEL02' }))).status).toBe(404);
  });
});

describe('malformed input', () => {
  const url = () => `/api/v1/webhooks/waha/${ch.id}?token=${encodeURIComponent(ch.token)}`;

  it('answers 4xx at the door for what cannot be a webhook, and keeps accepting valid traffic', async () => {
    const cases: Array<[string, string | Buffer, number]> = [
      ['not JSON', '{"event": "message", ', 400],
      ['a JSON array', '[{"event":"message"}]', 400],
      ['a JSON string', '"message"', 400],
      ['invalid UTF-8', Buffer.concat([Buffer.from('{"event":"message","payload":{"body":"'), Buffer.from([0xc3, 0x28, 0xff]), Buffer.from('"}}')]), 400],
      ['an empty body', '', 400],
      ['2 MiB', JSON.stringify({ event: 'message', pad: 'x'.repeat(2 * 1024 * 1024) }), 413],
    ];
    let n = 0;
    for (const [what, payload, status] of cases) {
      const r = await inject(url(), payload);
      expect(r.statusCode, what).toBe(status);
      expect(r.headers['content-type'], what).toMatch(/problem\+json/);
      if (status === 413) expect(r.json().detail).toBe('the request body is larger than the 1 MiB this route takes');
      const ok = await t.post(ch, wahaText('5511966660010', `valid ${n}`, { id: `AROUND${n++}` }));
      expect(ok.status, `valid after ${what}`).toBe(200);
    }
    for (let i = 0; i < n; i++) await waitFor(() => messageByKey(t.db, ch.id, `AROUND${i}`), `valid message ${i} stored`);
  });

  it('parks JSON that is not a valid webhook in parse_errors with the raw body and the reason', async () => {
    const bodies = [
      { what: 'missing event', body: { session: 'x', payload: { id: 'A' } }, reason: /event/ },
      { what: 'wrong types', body: { event: 'message', payload: { id: 123, fromMe: 'yes', timestamp: 'soon' } }, reason: /payload\.(id|fromMe|timestamp)/ },
      { what: 'payload not an object', body: { event: 'message', payload: 'hello' }, reason: /payload must be an object/ },
      { what: 'ack without id', body: { event: 'message.ack', payload: { ack: 3 } }, reason: /payload\.id/ },
    ];
    const before = await count(t.db, 'SELECT 1 FROM parse_errors');
    for (const b of bodies) expect((await t.post(ch, b.body)).status, b.what).toBe(200);
    await t.post(ch, wahaText('5511966660011', 'depois dos ruins', { id: 'AFTERBAD' }));
    await waitFor(() => messageByKey(t.db, ch.id, 'AFTERBAD'), 'valid message after the malformed ones');
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM parse_errors')) >= before + bodies.length, 'parse errors parked');
    const rows = (await t.db.query('SELECT * FROM parse_errors WHERE channel_id = $1 ORDER BY created_at', [ch.id])).rows;
    for (const b of bodies) {
      const row = rows.find((r) => Buffer.from(r.body).toString('utf8') === JSON.stringify(b.body));
      expect(row, b.what).toBeDefined();
      expect(row!.reason, b.what).toMatch(b.reason);
      expect(row).toMatchObject({ project_id: t.projectId, provider: 'waha' });
    }
    // Parked, not retried: nothing of them is waiting in the broker or dead-lettered.
    expect(await count(t.db, 'SELECT 1 FROM dead_letters WHERE project_id = $1', [t.projectId])).toBe(0);
  });

  it('stores text holding U+0000 or half an emoji with U+FFFD in their place, instead of failing on every retry', async () => {
    // JSON.stringify writes both as \u escapes, as a sender's JSON library would.
    const nul = wahaText('5511966660021', 'antes\u0000depois', { id: 'NUL01' });
    nul.payload._data.Info.PushName = 'Ana\u0000';
    const cut = wahaText('5511966660022', 'oi \ud83d', { id: 'CUT01' });
    const pair = wahaText('5511966660023', 'inteiro \ud83d\ude00', { id: 'PAIR01' });
    for (const b of [nul, cut, pair]) expect((await t.post(ch, JSON.stringify(b))).status).toBe(200);
    const stored = await waitFor(() => messageByKey(t.db, ch.id, 'NUL01'), 'message with U+0000 stored');
    expect(stored.text).toBe('antes\ufffddepois');
    const contact = (await t.db.query('SELECT name FROM contacts WHERE id = $1', [stored.contact_id])).rows[0];
    expect(contact.name).toBe('Ana\ufffd');
    expect((await waitFor(() => messageByKey(t.db, ch.id, 'CUT01'), 'message with a lone surrogate stored')).text).toBe('oi \ufffd');
    expect((await waitFor(() => messageByKey(t.db, ch.id, 'PAIR01'), 'message with an escaped emoji stored')).text).toBe('inteiro 😀');
  });

  it('parks, without retries, what the parser lets through but the database refuses', async () => {
    const cases = [
      // Milliseconds where seconds belong: the year 11476, which no ISO date or PostgreSQL holds.
      { what: 'a timestamp in the year 11476', body: wahaText('5511966660024', 'futuro', { id: 'FAR01', ts: 300_000_000_000_000 }), reason: /timestamp/ },
      // Accepted by the parser; too large for the index of message ids even compressed (SQLSTATE 54000).
      { what: 'a 16 KB message id', body: wahaText('5511966660025', 'id enorme', { id: `BIG${randomBytes(8192).toString('hex').toUpperCase()}` }), reason: /database refused a value/ },
    ];
    for (const c of cases) expect((await t.post(ch, JSON.stringify(c.body))).status, c.what).toBe(200);
    await t.post(ch, wahaText('5511966660026', 'depois', { id: 'AFTERREFUSED' }));
    await waitFor(() => messageByKey(t.db, ch.id, 'AFTERREFUSED'), 'valid message after the refused ones');
    for (const c of cases) {
      const row = await waitFor(
        async () => (await t.db.query('SELECT reason FROM parse_errors WHERE channel_id = $1 AND body = $2', [ch.id, Buffer.from(JSON.stringify(c.body))])).rows[0],
        `${c.what} parked`,
      );
      expect(row.reason, c.what).toMatch(c.reason);
    }
    expect(await count(t.db, 'SELECT 1 FROM dead_letters WHERE project_id = $1', [t.projectId])).toBe(0);
  });

  it('accepts a webhook without a Content-Type (WAHA sends JSON; the bytes are what is checked)', async () => {
    const body = JSON.stringify(wahaText('5511966660012', 'sem content-type', { id: 'NOCT01' }));
    const r = await inject(url(), body, {});
    expect(r.statusCode).toBe(200);
    await waitFor(() => messageByKey(t.db, ch.id, 'NOCT01'), 'stored');
  });
});

describe('Meta Cloud API ingress', () => {
  const APP_SECRET = 'meta-app-secret';
  let cloud: { id: string };

  beforeAll(async () => {
    const r = await t.api('POST', '/channels', {
      name: 'cloud',
      type: 'whatsapp_cloud',
      config: { phone_number_id: '200000000000001', access_token: 'EAAG-token', app_secret: APP_SECRET, verify_token: 'verify-me' },
    });
    expect(r.status).toBe(201);
    expect(r.json.webhook_url).toBe(`https://crm.example.test/api/v1/webhooks/whatsapp/${r.json.id}`);
    cloud = r.json;
  });

  it('answers the subscription challenge only with the verify token', async () => {
    const get = (token: string) =>
      t.app.inject({ method: 'GET', url: `/api/v1/webhooks/whatsapp/${cloud.id}`, query: { 'hub.mode': 'subscribe', 'hub.verify_token': token, 'hub.challenge': '1158201444' } });
    const ok = await get('verify-me');
    expect(ok.statusCode).toBe(200);
    expect(ok.body).toBe('1158201444');
    expect((await get('wrong')).statusCode).toBe(403);
  });

  it('checks X-Hub-Signature-256 on the raw bytes, then stores the messages', async () => {
    const body = JSON.stringify(fixture('text', 'whatsapp-cloud'));
    const sign = (b: string, key = APP_SECRET) => `sha256=${createHmac('sha256', key).update(b).digest('hex')}`;
    const url = `/api/v1/webhooks/whatsapp/${cloud.id}`;
    expect((await inject(url, body)).statusCode).toBe(401);
    expect((await inject(url, body, { 'content-type': 'application/json', 'x-hub-signature-256': sign(body, 'other') })).statusCode).toBe(401);
    expect((await inject(url, body, { 'content-type': 'application/json', 'x-hub-signature-256': sign(body) })).statusCode).toBe(200);
    const m = await waitFor(() => messageByKey(t.db, cloud.id, 'wamid.DEV0000000000000000000000000TEXT01'), 'cloud message stored');
    expect(m).toMatchObject({ type: 'text', text: 'Oi! Vocês abrem no sábado?', direction: 'inbound' });
    const c = (await t.db.query('SELECT phone, name FROM contacts WHERE id = $1', [m.contact_id])).rows[0];
    expect(c).toEqual({ phone: '+5511900000001', name: 'Joana Prado' });
    // The WAHA route does not serve Cloud channels.
    expect((await t.post({ id: cloud.id, token: 'x' } as Channel, wahaText('5511966660013', 'x'))).status).toBe(404);
  });

  it('takes every Cloud API fixture through the ingress: messages stored, statuses applied, nothing parked', async () => {
    const url = `/api/v1/webhooks/whatsapp/${cloud.id}`;
    const expected = new Set<string>();
    for (const name of fixtureNames('whatsapp-cloud')) {
      const body = JSON.stringify(fixture(name, 'whatsapp-cloud'));
      // As the processor parses it: changes for another business number are not this channel's.
      for (const e of parseCloudWebhook(JSON.parse(body), { phoneNumberId: '200000000000001' })) if (e.kind === 'message') expected.add(e.messageKey);
      const sig = `sha256=${createHmac('sha256', APP_SECRET).update(body).digest('hex')}`;
      expect((await inject(url, body, { 'content-type': 'application/json', 'x-hub-signature-256': sig })).statusCode, name).toBe(200);
    }
    expect(expected.size).toBeGreaterThan(10);
    for (const key of expected) await waitFor(() => messageByKey(t.db, cloud.id, key), `cloud message ${key}`);
    expect(await count(t.db, 'SELECT 1 FROM parse_errors WHERE channel_id = $1', [cloud.id])).toBe(0);
    // The messages addressed to other business numbers (multi-entry, other-phone-number) were not
    // stored: each shared its POST with a message that was, so their POSTs are done.
    for (const key of ['wamid.DEV00000000000000000000000000MLT02', 'wamid.DEV00000000000000000000000000OPN02']) {
      expect(await messageByKey(t.db, cloud.id, key), key).toBeUndefined();
    }
  });
});
