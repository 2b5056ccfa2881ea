// The subscription API: what may be saved (events, headers, secrets, URLs — SSRF), what is shown
// (the secret once), rotation, pause/resume, permissions and tenant isolation.
import type { FastifyInstance } from 'fastify';
import { beforeAll, describe, expect, it } from 'vitest';
import { EVENT_TYPES } from '../../src/domain/events.ts';
import { makeWebhookSubscriptionsService } from '../../src/services/webhook-subscriptions.service.ts';
import type { ResolveHost } from '../../src/webhooks/ssrf-guard.ts';
import { openSecrets } from '../../src/webhooks/signer.ts';
import { sealJson } from '../../src/domain/secret-box.ts';
import { call } from '../http/harness.ts';
import { api, makeTenant, SECRET_KEY, startWorld, subscribe, type TestTenant, type World } from './webhook-harness.ts';

describe('webhook subscriptions API', () => {
  let w: World;
  let a: TestTenant;
  let b: TestTenant;
  beforeAll(async () => {
    w = await startWorld({ worker: false });
    [a, b] = [await makeTenant(w), await makeTenant(w)];
  }, 120_000);

  it('creates a subscription and shows its generated whsec_ secret once', async () => {
    const r = await api(w, a, 'POST', '/webhook-subscriptions', {
      name: 'n8n',
      url: 'http://127.0.0.1:5678/webhook/ventros',
      events: ['message.received', 'contact.*'],
      headers: { Authorization: 'Bearer abc' },
      max_attempts: 4,
      timeout_seconds: 3,
      rate_limit_per_second: 10,
    });
    expect(r.status).toBe(201);
    expect(r.json.secret).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(r.json).toMatchObject({ name: 'n8n', events: ['message.received', 'contact.*'], headers: { Authorization: 'Bearer abc' }, max_attempts: 4, timeout_seconds: 3, rate_limit_per_second: 10, active: true, paused: false });
    const got = await api(w, a, 'GET', `/webhook-subscriptions/${r.json.id}`);
    expect(got.status).toBe(200);
    expect(got.json.secret).toBeUndefined();
    expect(JSON.stringify(got.json)).not.toContain(r.json.secret);
    const list = await api(w, a, 'GET', '/webhook-subscriptions');
    expect(list.json.data.map((s: any) => s.id)).toContain(r.json.id);
    expect(JSON.stringify(list.json)).not.toContain(r.json.secret);
  });

  it('uses the server defaults for attempts and timeout when none are given, and a given secret as is', async () => {
    const secret = 'whsec_' + Buffer.alloc(32, 7).toString('base64');
    const s = await subscribe(w, a, { url: 'http://127.0.0.1:1/x', secret });
    expect(s.secret).toBe(secret);
    expect(s.max_attempts).toBe(3); // schedule 200ms,400ms → 3 attempts
    expect(s.timeout_seconds).toBe(5);
    const bad = await api(w, a, 'POST', '/webhook-subscriptions', { url: 'http://127.0.0.1:1/x', events: ['*'], secret: 'hunter2' });
    expect(bad.status).toBe(400);
    expect(bad.json.errors[0].field).toBe('secret');
  });

  it('refuses unknown event types with the list of valid ones', async () => {
    const r = await api(w, a, 'POST', '/webhook-subscriptions', { url: 'http://127.0.0.1:1/x', events: ['message.recieved', 'contacts.*', 'contact.*'] });
    expect(r.status).toBe(400);
    expect(r.json.code).toBe('validation');
    expect(r.json.detail).toContain('message.recieved');
    expect(r.json.detail).toContain('contacts.*');
    for (const t of EVENT_TYPES) expect(r.json.detail).toContain(t);
    const available = await api(w, a, 'GET', '/webhook-subscriptions/available-events');
    expect(available.json.data.map((e: any) => e.type)).toEqual(EVENT_TYPES);
    expect(available.json.data.every((e: any) => e.description.length > 0)).toBe(true);
  });

  it('refuses custom headers that would replace ours or break the request', async () => {
    for (const headers of [{ 'webhook-signature': 'v1,x' }, { 'Content-Type': 'text/plain' }, { 'bad name': 'x' }, { 'X-Ok': 'a\r\nInjected: 1' }]) {
      const r = await api(w, a, 'POST', '/webhook-subscriptions', { url: 'http://127.0.0.1:1/x', events: ['*'], headers });
      expect(r.status, JSON.stringify(headers)).toBe(400);
    }
  });

  it('refuses URLs that are not http(s)', async () => {
    for (const url of ['ftp://example.com/x', 'file:///etc/passwd', 'not a url', 'http://user:pass@127.0.0.1/x']) {
      const r = await api(w, a, 'POST', '/webhook-subscriptions', { url, events: ['*'] });
      expect(r.status, url).toBe(400);
      expect(r.json.errors[0].field).toBe('url');
    }
  });

  it('rotates the secret: a new one shown once, the previous one valid for 24 h', async () => {
    const s = await subscribe(w, a, { url: 'http://127.0.0.1:1/x' });
    const r = await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/rotate-secret`);
    expect(r.status).toBe(200);
    expect(r.json.secret).toMatch(/^whsec_/);
    expect(r.json.secret).not.toBe(s.secret);
    const expires = Date.parse(r.json.previous_secret_expires_at) - Date.now();
    expect(expires).toBeGreaterThan(23.9 * 3_600_000);
    expect(expires).toBeLessThanOrEqual(24 * 3_600_000);
    const got = await api(w, a, 'GET', `/webhook-subscriptions/${s.id}`);
    expect(got.json.previous_secret_expires_at).toBe(r.json.previous_secret_expires_at);
  });

  it('rotates a secret that no longer opens (sealed under another SECRET_KEY): the rotation mends it instead of failing', async () => {
    const s = await subscribe(w, a, { url: 'http://127.0.0.1:1/x' });
    await w.db.query('UPDATE webhook_subscriptions SET secret = $2 WHERE id = $1', [s.id, sealJson('another-secret-key-0123456789abcdef0123456789', 'whsec_x')]);
    const r = await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/rotate-secret`);
    expect(r.status).toBe(200);
    const row = (await w.db.query('SELECT secret, previous_secret FROM webhook_subscriptions WHERE id = $1', [s.id])).rows[0];
    expect(openSecrets(SECRET_KEY, row.secret)).toEqual([r.json.secret]);
    expect(row.previous_secret).toBeNull(); // nothing that cannot sign is kept to sign
  });

  it('pauses, resumes, disables, re-enables and deletes', async () => {
    const s = await subscribe(w, a, { url: 'http://127.0.0.1:1/x' });
    expect((await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/pause`)).json.paused).toBe(true);
    // Paused, a test would only wait for the resume: refused, as retry and recover are.
    const pausedTest = await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/test`);
    expect(pausedTest.status).toBe(409);
    expect(pausedTest.json.detail).toContain('paused');
    expect((await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/resume`)).json.paused).toBe(false);
    const off = await api(w, a, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: false, events: ['session.*'] });
    expect(off.json).toMatchObject({ active: false, events: ['session.*'] });
    expect((await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/test`)).status).toBe(409);
    expect((await api(w, a, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: true })).json.active).toBe(true);
    expect((await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/test`)).status).toBe(202);
    expect((await api(w, a, 'DELETE', `/webhook-subscriptions/${s.id}`)).status).toBe(204);
    expect((await api(w, a, 'GET', `/webhook-subscriptions/${s.id}`)).status).toBe(404);
  });

  it("keeps a failing streak through a PATCH that sends active: true on an active subscription, and clears it when one is turned back on", async () => {
    const s = await subscribe(w, a, { url: 'http://127.0.0.1:1/x' });
    await w.db.query(`UPDATE webhook_subscriptions SET failing_since = now() - interval '3 days' WHERE id = $1`, [s.id]);
    const since = (await api(w, a, 'GET', `/webhook-subscriptions/${s.id}`)).json.failing_since;
    expect(since).not.toBeNull();
    // A client that sends every field on each PATCH (n8n, Terraform) would otherwise never be disabled.
    const same = await api(w, a, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: true, name: 'renamed' });
    expect(same.json).toMatchObject({ active: true, name: 'renamed', failing_since: since });
    await api(w, a, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: false });
    expect((await api(w, a, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: true })).json).toMatchObject({ active: true, failing_since: null, disabled_at: null });
  });

  it("answers 404 for another project's subscription and delivery, and never lists them", async () => {
    const s = await subscribe(w, a, { url: 'http://127.0.0.1:1/x' });
    const test = await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/test`);
    expect(test.status).toBe(202);
    const deliveryId = test.json.id;
    for (const [method, url, body] of [
      ['GET', `/webhook-subscriptions/${s.id}`],
      ['PATCH', `/webhook-subscriptions/${s.id}`, { name: 'mine now' }],
      ['DELETE', `/webhook-subscriptions/${s.id}`],
      ['POST', `/webhook-subscriptions/${s.id}/rotate-secret`],
      ['POST', `/webhook-subscriptions/${s.id}/test`],
      ['POST', `/webhook-subscriptions/${s.id}/pause`],
      ['GET', `/webhook-subscriptions/${s.id}/deliveries`],
      ['POST', `/webhook-subscriptions/${s.id}/recover`, { since: new Date(0).toISOString() }],
      ['GET', `/webhook-deliveries/${deliveryId}`],
      ['POST', `/webhook-deliveries/${deliveryId}/retry`],
    ] as const) {
      const r = await api(w, b, method, url, body);
      expect(r.status, `${method} ${url}`).toBe(404);
    }
    const lists = [await api(w, b, 'GET', '/webhook-subscriptions'), await api(w, b, 'GET', '/webhook-deliveries')];
    for (const l of lists) expect(JSON.stringify(l.json)).not.toContain(s.id);
    expect((await api(w, a, 'GET', `/webhook-deliveries?subscription_id=${s.id}`)).json.data[0].id).toBe(deliveryId);
  });

  it('lets managers and admins read and manage webhooks, and nobody else', async () => {
    for (const role of ['viewer', 'agent', 'manager'] as const) {
      const k = await call(w.app, a.key, 'POST', '/api-keys', { body: { name: role, role } });
      const list = await call(w.app, k.json.key, 'GET', '/webhook-subscriptions');
      const create = await call(w.app, k.json.key, 'POST', '/webhook-subscriptions', { body: { url: 'http://127.0.0.1:1/x', events: ['*'] } });
      expect([role, list.status, create.status]).toEqual([role, ...(role === 'manager' ? [200, 201] : [403, 403])]);
    }
  });

  describe('when private addresses are not allowed', () => {
    let strict: FastifyInstance;
    beforeAll(async () => {
      strict = await w.appWith({ WEBHOOK_ALLOW_PRIVATE_URLS: 'false' });
    });

    it('refuses loopback, private, link-local and metadata addresses', async () => {
      for (const url of ['http://127.0.0.1:8080/hook', 'http://10.0.0.1/hook', 'http://169.254.169.254/latest/meta-data', 'http://localhost:3000/x', 'http://[::1]/x', 'http://192.168.1.10/x']) {
        const r = await call(strict, a.key, 'POST', '/webhook-subscriptions', { body: { url, events: ['*'] } });
        expect(r.status, url).toBe(400);
        expect(r.json.errors[0].field).toBe('url');
        expect(r.json.detail).toMatch(/private|loopback|WEBHOOK_ALLOW_PRIVATE_URLS/);
      }
      const s = await call(strict, a.key, 'POST', '/webhook-subscriptions', { body: { url: 'https://93.184.216.34/hooks', events: ['*'] } });
      expect(s.status).toBe(201);
      const moved = await call(strict, a.key, 'PATCH', `/webhook-subscriptions/${s.json.id}`, { body: { url: 'http://10.1.2.3/x' } });
      expect(moved.status).toBe(400);
    });

    it('refuses a hostname that resolves to loopback', async () => {
      const resolve: ResolveHost = async (host) => (host === 'sneaky.example.com' ? [{ address: '127.0.0.1', family: 4 }] : [{ address: '93.184.216.34', family: 4 }]);
      const service = makeWebhookSubscriptionsService({ db: w.db, broker: w.broker, secretKey: SECRET_KEY, allowPrivateUrls: false, retryScheduleMs: [200], defaultTimeoutMs: 5000, resolve });
      await expect(service.create(a.projectId, { url: 'http://sneaky.example.com/hook', events: ['*'] })).rejects.toMatchObject({
        code: 'validation',
        detail: expect.stringContaining('sneaky.example.com resolves to a private'),
      });
      await expect(service.create(a.projectId, { url: 'http://sneaky.example.com/hook', events: ['*'] })).rejects.toMatchObject({ detail: expect.not.stringContaining('127.0.0.1') });
      const ok = await service.create(a.projectId, { url: 'https://hooks.example.com/in', events: ['*'] });
      expect(ok.subscription.url).toBe('https://hooks.example.com/in');
    });
  });
});
