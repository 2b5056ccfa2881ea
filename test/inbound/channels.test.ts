// /channels: create, list, read, update, delete; credentials sealed at rest and never shown; the
// webhook URL only for those who may manage channels; per-channel session timeout; and the WAHA
// webhook registration against a fake WAHA server.
import http from 'node:http';
import type { AddressInfo } from 'node:net';
import { beforeAll, describe, expect, it } from 'vitest';
import { onCleanup, waitFor } from '../support/env.ts';
import { messageByKey, startInbound, wahaText, type Inbound } from './harness.ts';

let t: Inbound;

beforeAll(async () => {
  t = await startInbound();
});

const WAHA = { base_url: 'http://waha.example.test:3000/', api_key: 'super-secret-api-key', session: 'loja', hmac_key: 'super-secret-hmac' };

describe('channels', () => {
  it('creates a WAHA channel that shows its settings and webhook URL but never a credential', async () => {
    const r = await t.api('POST', '/channels', { name: 'Loja', type: 'waha', config: WAHA });
    expect(r.status).toBe(201);
    expect(r.json).toMatchObject({
      name: 'Loja',
      type: 'waha',
      status: 'inactive',
      config: { base_url: 'http://waha.example.test:3000', session: 'loja' },
      secrets_set: ['api_key', 'hmac_key'],
      session_timeout_minutes: 30,
      session_timeout_is_default: true,
    });
    expect(r.json.webhook_url).toMatch(new RegExp(`^https://crm\\.example\\.test/api/v1/webhooks/waha/${r.json.id}\\?token=[A-Za-z0-9_-]{32}$`));
    const everything = JSON.stringify([r.json, (await t.api('GET', `/channels/${r.json.id}`)).json, (await t.api('GET', '/channels')).json]);
    expect(everything).not.toContain('super-secret');

    // Sealed at rest: the row holds neither credential in clear.
    const row = (await t.db.query('SELECT config, secrets FROM channels WHERE id = $1', [r.json.id])).rows[0];
    expect(JSON.stringify(row)).not.toContain('super-secret');
    expect(row.secrets).toMatch(/^v1\./);
  });

  it('lists, reads, updates and deletes within the project only', async () => {
    const a = (await t.api('POST', '/channels', { name: 'A', type: 'waha', config: WAHA })).json;
    const b = (await t.api('POST', '/channels', { name: 'B', type: 'waha', config: WAHA, session_timeout_minutes: 45 })).json;
    expect(b).toMatchObject({ session_timeout_minutes: 45, session_timeout_is_default: false });

    const page1 = await t.api('GET', '/channels?limit=1');
    expect(page1.json.data).toHaveLength(1);
    expect(page1.json.data[0].id).toBe(b.id); // newest first
    const page2 = await t.api('GET', `/channels?limit=1&cursor=${encodeURIComponent(page1.json.next_cursor)}`);
    expect(page2.json.data[0].id).toBe(a.id);

    const patched = await t.api('PATCH', `/channels/${a.id}`, { name: 'A2', session_timeout_minutes: 10, config: { api_key: 'rotated-secret', hmac_key: null } });
    expect(patched.status).toBe(200);
    expect(patched.json).toMatchObject({ name: 'A2', session_timeout_minutes: 10, secrets_set: ['api_key'], config: { session: 'loja' } });
    expect(JSON.stringify(patched.json)).not.toContain('rotated-secret');
    expect((await t.api('PATCH', `/channels/${a.id}`, { session_timeout_minutes: null })).json).toMatchObject({ session_timeout_minutes: 30, session_timeout_is_default: true });

    const other = await t.app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { name: 'o', email: `o${Date.now()}@example.com`, password: 'correct horse battery staple' } });
    const otherKey = other.json().api_key.key;
    expect((await t.api('GET', `/channels/${a.id}`, undefined, otherKey)).status).toBe(404);
    expect((await t.api('PATCH', `/channels/${a.id}`, { name: 'stolen' }, otherKey)).status).toBe(404);
    expect((await t.api('DELETE', `/channels/${a.id}`, undefined, otherKey)).status).toBe(404);
    expect((await t.api('GET', '/channels', undefined, otherKey)).json.data).toEqual([]);

    expect((await t.api('DELETE', `/channels/${a.id}`)).status).toBe(204);
    expect((await t.api('GET', `/channels/${a.id}`)).status).toBe(404);
    expect((await t.api('DELETE', `/channels/${a.id}`)).status).toBe(404);
  });

  it('rejects unknown, missing and malformed settings with every problem named', async () => {
    const bad = await t.api('POST', '/channels', { name: 'x', type: 'waha', config: { base_url: 'ftp://nope', session: '', token: 'x' } });
    expect(bad.status).toBe(400);
    const fields = bad.json.errors.map((e: { field: string }) => e.field).sort();
    expect(fields).toEqual(['config.api_key', 'config.base_url', 'config.session', 'config.token']);
    expect((await t.api('POST', '/channels', { name: 'x', type: 'telegram', config: {} })).status).toBe(400);
    const cloud = await t.api('POST', '/channels', { name: 'c', type: 'whatsapp_cloud', config: { phone_number_id: '1' } });
    expect(cloud.status).toBe(400);
    expect(cloud.json.errors.map((e: { field: string }) => e.field).sort()).toEqual(['config.access_token', 'config.app_secret', 'config.verify_token']);
    const ok = (await t.api('POST', '/channels', { name: 'y', type: 'waha', config: WAHA })).json;
    expect((await t.api('PATCH', `/channels/${ok.id}`, { config: { api_key: null } })).status).toBe(400); // required
    expect((await t.api('PATCH', `/channels/${ok.id}`, {})).status).toBe(400);
    // A user and password in the URL: fetch refuses it (every reply would fail, with the URL and
    // its password in the error), and the URL is shown to every member.
    const withUser = await t.api('POST', '/channels', { name: 'u', type: 'waha', config: { ...WAHA, base_url: 'https://admin:s3cret@waha.example.com' } });
    expect({ status: withUser.status, errors: withUser.json.errors }).toEqual({
      status: 400,
      errors: [{ field: 'config.base_url', message: expect.stringContaining('user name or password') }],
    });
    expect((await t.api('PATCH', `/channels/${ok.id}`, { config: { base_url: 'https://admin@waha.example.com', api_key: 'k' } })).status).toBe(400);
    expect(JSON.stringify(withUser.json)).not.toContain('s3cret');
  });

  it('never carries stored credentials to a new provider address: they must be sent with it', async () => {
    const waha = (await t.api('POST', '/channels', { name: 'moving', type: 'waha', config: WAHA })).json;
    // Someone who may edit the channel but not read its key points it at a server of theirs.
    const moved = await t.api('PATCH', `/channels/${waha.id}`, { config: { base_url: 'https://elsewhere.example.test' } });
    expect(moved.status).toBe(400);
    expect(moved.json.errors.map((e: any) => e.field).sort()).toEqual(['config.api_key', 'config.hmac_key']);
    expect((await t.api('GET', `/channels/${waha.id}`)).json.config.base_url).toBe('http://waha.example.test:3000');
    // The same address (as stored after normalising) is not a move; a move with its credentials is fine.
    expect((await t.api('PATCH', `/channels/${waha.id}`, { config: { base_url: 'http://waha.example.test:3000/', session: 'loja2' } })).status).toBe(200);
    const withKeys = await t.api('PATCH', `/channels/${waha.id}`, { config: { base_url: 'https://elsewhere.example.test', api_key: 'new-key', hmac_key: null } });
    expect(withKeys.status, JSON.stringify(withKeys.json)).toBe(200);
    expect(withKeys.json).toMatchObject({ config: { base_url: 'https://elsewhere.example.test' }, secrets_set: ['api_key'] });

    const cloudConfig = { phone_number_id: '200000000000009', access_token: 'tok', app_secret: 'sec', verify_token: 'v' };
    const cloud = (await t.api('POST', '/channels', { name: 'moving', type: 'whatsapp_cloud', config: cloudConfig })).json;
    const away = await t.api('PATCH', `/channels/${cloud.id}`, { config: { api_base_url: 'https://graph.elsewhere.example.test' } });
    expect(away.status).toBe(400);
    expect(away.json.errors.map((e: any) => e.field)).toEqual(['config.access_token']);
    expect((await t.api('PATCH', `/channels/${cloud.id}`, { config: { api_base_url: 'https://graph.elsewhere.example.test', access_token: 'tok2' } })).status).toBe(200);
    // Back to Meta's own address (the default) needs nothing.
    expect((await t.api('PATCH', `/channels/${cloud.id}`, { config: { api_base_url: null } })).status).toBe(200);
  });

  it('drops spaces pasted around a shown setting, and refuses a secret with spaces around it', async () => {
    const cloud = await t.api('POST', '/channels', {
      name: 'padded',
      type: 'whatsapp_cloud',
      config: { phone_number_id: ' 200000000000001\n', access_token: 'tok', app_secret: 'sec', verify_token: 'v' },
    });
    expect(cloud.status, JSON.stringify(cloud.json)).toBe(201);
    expect(cloud.json.config.phone_number_id).toBe('200000000000001');
    const waha = await t.api('POST', '/channels', { name: 'padded', type: 'waha', config: { ...WAHA, base_url: ' http://waha.example.test:3000/ ', session: ' loja ' } });
    expect(waha.json.config).toMatchObject({ base_url: 'http://waha.example.test:3000', session: 'loja' });
    // A secret is never changed: one pasted with a space or a line break is refused, naming it.
    const padded = await t.api('POST', '/channels', {
      name: 'padded secret',
      type: 'whatsapp_cloud',
      config: { phone_number_id: '200000000000002', access_token: 'tok', app_secret: 'sec\n', verify_token: ' v ' },
    });
    expect(padded.status).toBe(400);
    expect(padded.json.errors.map((e: any) => e.field).sort()).toEqual(['config.app_secret', 'config.verify_token']);
    expect((await t.api('PATCH', `/channels/${waha.json.id}`, { config: { api_key: ' k' } })).status).toBe(400);
    // The verify token as given answers Meta's challenge.
    const challenge = (token: string) =>
      t.app.inject({ method: 'GET', url: `/api/v1/webhooks/whatsapp/${cloud.json.id}`, query: { 'hub.mode': 'subscribe', 'hub.verify_token': token, 'hub.challenge': '42' } });
    expect((await challenge('v')).body).toBe('42');
  });

  it('shows the webhook URL (it embeds the token) only to roles that manage channels', async () => {
    const created = (await t.api('POST', '/channels', { name: 'v', type: 'waha', config: WAHA })).json;
    const key = await t.api('POST', '/api-keys', { name: 'viewer', role: 'viewer' });
    expect(key.status).toBe(201);
    const seen = await t.api('GET', `/channels/${created.id}`, undefined, key.json.key);
    expect(seen.status).toBe(200);
    expect(seen.json.webhook_url).toBeNull();
    expect((await t.api('POST', '/channels', { name: 'v2', type: 'waha', config: WAHA }, key.json.key)).status).toBe(403);
    expect((await t.api('DELETE', `/channels/${created.id}`, undefined, key.json.key)).status).toBe(403);
  });

  it("opens sessions with the channel's own timeout", async () => {
    const ch = await t.createChannel({}, { session_timeout_minutes: 5 });
    await t.post(ch, wahaText('5511955550001', 'oi', { id: 'TIMEOUT01', ts: 1764460800 }));
    const m = await waitFor(() => messageByKey(t.db, ch.id, 'TIMEOUT01'), 'stored');
    const s = (await t.db.query('SELECT timeout_minutes, due_at FROM sessions WHERE id = $1', [m.session_id])).rows[0];
    expect(s.timeout_minutes).toBe(5);
    expect(new Date(s.due_at).toISOString()).toBe('2025-11-30T00:05:00.000Z');

    // A new timeout reaches the channel's active sessions: their due time counts from their last
    // activity with it.
    const active = await t.db.query(`SELECT id FROM sessions WHERE channel_id = $1 AND status = 'active'`, [ch.id]);
    expect(active.rows).toEqual([{ id: m.session_id }]);
    expect((await t.api('PATCH', `/channels/${ch.id}`, { session_timeout_minutes: 60 })).status).toBe(200);
    const after = (await t.db.query('SELECT timeout_minutes, due_at FROM sessions WHERE id = $1', [m.session_id])).rows[0];
    expect(after.timeout_minutes).toBe(60);
    expect(new Date(after.due_at).toISOString()).toBe('2025-11-30T01:00:00.000Z');
    // Back to the default (30 minutes here).
    expect((await t.api('PATCH', `/channels/${ch.id}`, { session_timeout_minutes: null })).status).toBe(200);
    const reset = (await t.db.query('SELECT timeout_minutes, due_at FROM sessions WHERE id = $1', [m.session_id])).rows[0];
    expect(reset.timeout_minutes).toBe(30);
    expect(new Date(reset.due_at).toISOString()).toBe('2025-11-30T00:30:00.000Z');
  });
});

describe('POST /channels/{id}/configure-webhook', () => {
  it('registers our webhook URL, events and HMAC key on the WAHA session', async () => {
    const calls: Array<{ method: string; url: string; headers: http.IncomingHttpHeaders; body: any }> = [];
    let answer = 200;
    const server = http.createServer((req, res) => {
      let data = '';
      req.on('data', (c) => (data += c)).on('end', () => {
        calls.push({ method: req.method!, url: req.url!, headers: req.headers, body: data ? JSON.parse(data) : undefined });
        res.writeHead(answer, { 'content-type': 'application/json' }).end('{"name":"loja"}');
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    onCleanup(() => new Promise<void>((r) => server.close(() => r())));
    const base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
    const ch = (await t.api('POST', '/channels', { name: 'w', type: 'waha', config: { ...WAHA, base_url: base } })).json;

    const r = await t.api('POST', `/channels/${ch.id}/configure-webhook`);
    expect(r.status).toBe(200);
    expect(r.json.webhook_url).toBe(ch.webhook_url);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ method: 'PUT', url: '/api/sessions/loja', headers: { 'x-api-key': 'super-secret-api-key' } });
    const hook = calls[0].body.config.webhooks[0];
    expect(hook).toMatchObject({ url: ch.webhook_url, hmac: { key: 'super-secret-hmac' } });
    expect(hook.events).toEqual(expect.arrayContaining(['message.any', 'message.ack', 'session.status']));

    answer = 401;
    const refused = await t.api('POST', `/channels/${ch.id}/configure-webhook`);
    expect(refused.status).toBe(422);
    expect(refused.json.detail).toMatch(/401/);
  });
});
