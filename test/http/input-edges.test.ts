// Input at the edges, each case once a 500 or a wrong answer: JSON nested deeper than recursion
// further on can take, ids in upper case (the events filter, an idempotent retry, the webhook
// URL the ingress caches by), a header value the webhook sender cannot put on the wire, names of
// invisible characters only, a tag filter with spaces, an X-Project-ID that is no id.
import { createHmac } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { CHANNEL_CHANGES } from '../../src/db/channels.sql.ts';
import { postWebhook } from '../../src/webhooks/post-webhook.ts';
import { waitFor } from '../support/env.ts';
import { call, makeTenant, startApp, type Reply, type TestApp, type Tenant } from './harness.ts';
import { newPhone } from '../support/phones.ts';

/** A body as raw JSON text, so nesting and escapes reach the server exactly as written. */
const raw = (text: string, headers: Record<string, string> = {}) => ({ body: text, headers: { 'content-type': 'application/json', ...headers } });
/** `[[[…]]]`, `depth` arrays deep. */
const nested = (depth: number) => `${'['.repeat(depth)}${']'.repeat(depth)}`;
const upper = (id: string) => id.toUpperCase();

let t: TestApp;
let app: FastifyInstance;
let a: Tenant;
let admin: string;
const phone = () => `+${newPhone()}`;

beforeAll(async () => {
  t = await startApp({ WEBHOOK_ALLOW_PRIVATE_URLS: 'true' });
  app = t.app;
  a = await makeTenant(app);
  admin = a.keys.admin;
});

const brief = (r: Reply) => `${r.status} ${r.body.slice(0, 200)}`;

describe('bodies nested deep in free-form objects (custom_fields, settings, config)', () => {
  it('answers every route that takes a free-form object with a 4xx, not a 500, for nesting 6,000 deep (8 KiB of JSON)', async () => {
    const c = await call(app, admin, 'POST', '/contacts', { body: { phone: phone() } });
    expect(c.status).toBe(201);
    const deep = nested(6_000);
    const statuses = {
      'POST /contacts': (await call(app, admin, 'POST', '/contacts', raw(`{"phone":"${phone()}","custom_fields":{"x":${deep}}}`))).status,
      'PATCH /contacts/:id': (await call(app, admin, 'PATCH', `/contacts/${c.json.id}`, raw(`{"custom_fields":{"x":${deep}}}`))).status,
      'PATCH /projects/:id': (await call(app, admin, 'PATCH', `/projects/${a.projectId}`, raw(`{"settings":{"x":${deep}}}`))).status,
      'POST /channels (Idempotency-Key)': (await call(app, admin, 'POST', '/channels', raw(`{"name":"c","type":"waha","config":{"x":${deep}}}`, { 'idempotency-key': 'deep-channel' }))).status,
    };
    // Before: 500 everywhere (RangeError: Maximum call stack size exceeded in JSON.stringify, in the
    // Idempotency-Key hash or in the contact diff).
    expect(statuses).toEqual({ 'POST /contacts': 400, 'PATCH /contacts/:id': 400, 'PATCH /projects/:id': 400, 'POST /channels (Idempotency-Key)': 400 });
  });

  it('answers the same body the same way with or without an Idempotency-Key, naming where it is too deep', async () => {
    const body = (p: string) => `{"phone":"${p}","custom_fields":{"x":${nested(3_500)}}}`;
    const without = await call(app, admin, 'POST', '/contacts', raw(body(phone())));
    const withKey = await call(app, admin, 'POST', '/contacts', raw(body(phone()), { 'idempotency-key': 'deep-contact' }));
    for (const r of [without, withKey]) {
      expect(r.status, brief(r)).toBe(400);
      expect(r.json.errors[0].field).toMatch(/^custom_fields\.x(\.0)+$/);
      expect(r.json.errors[0].message).toMatch(/64 levels/);
    }
  });

  it('takes 64 levels, counting the body itself, and refuses 65', async () => {
    const at = (n: number) => raw(`{"phone":"${phone()}","custom_fields":{"x":${nested(n)}}}`);
    const ok = await call(app, admin, 'POST', '/contacts', at(62));
    expect(ok.status, brief(ok)).toBe(201);
    const renamed = await call(app, admin, 'PATCH', `/contacts/${ok.json.id}`, { body: { name: 'Ana' } });
    expect(renamed.status, brief(renamed)).toBe(200);
    expect((await call(app, admin, 'POST', '/contacts', at(63))).status).toBe(400);
  });
});

describe('text PostgreSQL cannot store, nested past the depth limit', () => {
  it('names where a U+0000 nested 70 objects deep in settings is, not the database', async () => {
    const deep = `${'{"a":'.repeat(70)}"x\\u0000"${'}'.repeat(70)}`;
    const r = await call(app, admin, 'PATCH', `/projects/${a.projectId}`, raw(`{"settings":${deep}}`));
    expect(r.status).toBe(400);
    // Before: the database's backstop answered, with no `errors` at all.
    expect(r.json.errors?.[0]?.field, JSON.stringify(r.json)).toMatch(/^settings\.a/);
  });
});

describe('upper-case ids', () => {
  it('finds events by aggregate_id whatever the case of the uuid', async () => {
    const c = await call(app, admin, 'POST', '/contacts', { body: { phone: phone() } });
    expect(c.status).toBe(201);
    await t.db.query('UPDATE outbox SET published_at = now() WHERE published_at IS NULL'); // as the relay would
    const lower = await call(app, admin, 'GET', `/events?aggregate_id=${c.json.id}`);
    expect(lower.json.data.map((e: { type: string }) => e.type)).toContain('contact.created');
    const up = await call(app, admin, 'GET', `/events?aggregate_id=${upper(c.json.id)}`);
    expect(up.json.data.map((e: { id: string }) => e.id)).toEqual(lower.json.data.map((e: { id: string }) => e.id));
  });

  it('replays a retried POST whose path names the same project in another case, instead of a 409', async () => {
    const body = { email: a.email, role: 'admin' };
    const first = await call(app, admin, 'POST', `/projects/${upper(a.projectId)}/members`, { body, headers: { 'idempotency-key': 'same-request' } });
    expect(first.status).toBe(200);
    const retry = await call(app, admin, 'POST', `/projects/${a.projectId}/members`, { body, headers: { 'idempotency-key': 'same-request' } });
    expect(retry.status, brief(retry)).toBe(200);
    expect(retry.headers['idempotent-replayed']).toBe('true');
  });
});

describe('the WAHA ingress with the channel id in upper case', () => {
  const event = JSON.stringify({ event: 'message', session: 's', payload: { id: 'false_5511999990000@c.us_ABC', from: '5511999990000@c.us', body: 'x', timestamp: 1_700_000_000 } });

  async function wahaChannel(config: Record<string, string> = {}) {
    const r = await call(app, admin, 'POST', '/channels', { body: { name: 'W', type: 'waha', config: { base_url: 'http://waha.example.test', api_key: 'k', session: 's', ...config } } });
    expect(r.status).toBe(201);
    return { id: r.json.id as string, token: new URL(r.json.webhook_url).searchParams.get('token')! };
  }
  const post = (id: string, token: string, hmac?: string) =>
    call(app, undefined, 'POST', `/webhooks/waha/${id}?token=${token}`, raw(event, hmac ? { 'x-webhook-hmac': createHmac('sha512', hmac).update(event).digest('hex') } : {}));

  /**
   * A case variant of the channel id that the ingress's channel cache holds right now. Made
   * certain, not assumed: a NOTIFY arriving while the first lookup loads (the channel's own
   * creation, on PostgreSQL) keeps that lookup out of the cache. The probe changes the token
   * behind the cache's back: the old token still passing means the entry is cached.
   */
  async function cachedVariant(ch: { id: string; token: string }, hmac?: string): Promise<string> {
    const letters = [...ch.id].flatMap((c, i) => (/[a-f]/.test(c) ? [i] : []));
    const variants = [upper(ch.id), ...letters.map((i) => ch.id.slice(0, i) + ch.id[i].toUpperCase() + ch.id.slice(i + 1))];
    for (const v of variants) {
      expect((await post(v, ch.token, hmac)).status).toBe(200);
      await t.db.query('UPDATE channels SET webhook_token = $2 WHERE id = $1', [ch.id, 'changed-behind-the-cache']);
      const probe = await post(v, ch.token, hmac);
      await t.db.query('UPDATE channels SET webhook_token = $2 WHERE id = $1', [ch.id, ch.token]);
      if (probe.status === 200) return v;
      // Not cached, so the probe's own lookup (with the changed token) may be: dropped, as any
      // change of a channel drops it.
      await t.db.query(`SELECT pg_notify('${CHANNEL_CHANGES}', $1)`, [ch.id]);
      await waitFor(async () => (await post(ch.id, ch.token, hmac)).status === 200, 'the restored token to be seen');
    }
    throw new Error('no case variant of the channel id stayed in the cache');
  }

  it('refuses webhooks for a deleted channel at its upper-case URL too', async () => {
    const ch = await wahaChannel();
    const variant = await cachedVariant(ch);
    expect((await call(app, admin, 'DELETE', `/channels/${ch.id}`)).status).toBe(204);
    expect((await post(ch.id, ch.token)).status).toBe(404);
    const r = await post(variant, ch.token);
    expect(r.status, brief(r)).toBe(404); // before: 200 queued, for up to the 60 s cache TTL
  });

  it('refuses a signature made with the replaced hmac_key at the upper-case URL too', async () => {
    const ch = await wahaChannel({ hmac_key: 'old-hmac-key' });
    const variant = await cachedVariant(ch, 'old-hmac-key');
    expect((await call(app, admin, 'PATCH', `/channels/${ch.id}`, { body: { config: { hmac_key: 'new-hmac-key' } } })).status).toBe(200);
    expect((await post(ch.id, ch.token, 'old-hmac-key')).status).toBe(401);
    const r = await post(variant, ch.token, 'old-hmac-key');
    expect(r.status, brief(r)).toBe(401); // before: 200, the rotated-out key still worked (and the processor does not check again)
  });
});

describe('rotate-secret', () => {
  it('refuses a body field it does not know, as every other body does, and still takes none', async () => {
    const sub = await call(app, admin, 'POST', '/webhook-subscriptions', { body: { url: 'http://127.0.0.1:1/hook', events: ['*'] } });
    expect(sub.status).toBe(201);
    const r = await call(app, admin, 'POST', `/webhook-subscriptions/${sub.json.id}/rotate-secret`, { body: { secert: 'whsec_typo' } });
    expect(r.status).toBe(400);
    expect(r.json.errors).toEqual([{ field: 'secert', message: 'is not allowed' }]);
    const none = await call(app, admin, 'POST', `/webhook-subscriptions/${sub.json.id}/rotate-secret`);
    expect(none.status, brief(none)).toBe(200);
  });
});

describe('webhook subscription headers', () => {
  it('refuses a custom header value that the sender cannot send (a character beyond Latin-1)', async () => {
    const headers = { Authorization: 'Bearer €uro-token' };
    const r = await call(app, admin, 'POST', '/webhook-subscriptions', { body: { url: 'http://127.0.0.1:1/hook', events: ['*'], headers } });
    // What every delivery of this subscription will meet: undici refuses the header before connecting.
    const attempt = await postWebhook({ url: 'http://127.0.0.1:1/hook', body: '{}', headers, timeoutMs: 2_000 });
    expect(attempt.error?.message).toMatch(/invalid authorization header/i);
    expect(r.status, brief(r)).toBe(400); // before: 201, and every delivery then failed
  });
});

describe('small things a client gets wrong', () => {
  it('refuses a name of invisible characters only, and takes one that has them beside visible ones', async () => {
    for (const name of ['\u200B', '\u200B\u200D\u2060', ' \u00AD ']) {
      const r = await call(app, admin, 'POST', '/pipelines', { body: { name, statuses: [{ name: 'Open', kind: 'open' }] } });
      expect(r.status, JSON.stringify(name)).toBe(400);
      expect(r.json.errors[0]).toMatchObject({ field: 'name', message: 'must not be blank' });
    }
    const family = await call(app, admin, 'POST', '/pipelines', { body: { name: 'Família 👨\u200D👩\u200D👧', statuses: [{ name: 'Open', kind: 'open' }] } });
    expect(family.status, brief(family)).toBe(201);
  });

  it('finds contacts by a tag given with spaces around it, as tags are stored trimmed', async () => {
    const c = await call(app, admin, 'POST', '/contacts', { body: { phone: phone(), tags: [' vip-trim '] } });
    expect(c.json.tags).toEqual(['vip-trim']);
    const found = await call(app, admin, 'GET', `/contacts?tag=${encodeURIComponent(' vip-trim ')}`);
    expect(found.json.data.map((x: { id: string }) => x.id)).toEqual([c.json.id]);
  });

  it('answers 400 naming X-Project-ID when it is no id, and 404 for an id of no project of the caller', async () => {
    const bad = await call(app, admin, 'GET', '/contacts', { headers: { 'x-project-id': 'not-a-project' } });
    expect(bad.status).toBe(400);
    expect(bad.json.errors).toEqual([{ field: 'X-Project-ID', message: 'must be a UUID' }]);
    const other = await call(app, admin, 'GET', '/contacts', { headers: { 'x-project-id': '00000000-0000-4000-8000-000000000000' } });
    expect(other.status).toBe(404);
    const own = await call(app, admin, 'GET', '/contacts', { headers: { 'x-project-id': a.projectId.toUpperCase() } });
    expect(own.status).toBe(200);
  });

  it('takes a JSON body as sent: a value of the wrong type is a 400 naming it, not converted', async () => {
    const c = await call(app, admin, 'POST', '/contacts', { body: { phone: phone(), name: 'Ana' } });
    const cases: Array<[string, string, Record<string, unknown>, string]> = [
      ['PATCH', `/contacts/${c.json.id}`, { name: false }, 'name'],
      ['POST', '/contacts', { phone: 5511999990002 }, 'phone'],
      ['POST', '/contacts', { phone: phone(), name: 123 }, 'name'],
      ['PATCH', `/contacts/${c.json.id}`, { tags: null }, 'tags'],
      ['PATCH', `/contacts/${c.json.id}`, { tags: 'vip' }, 'tags'],
      ['POST', '/pipelines', { name: 'P', statuses: [{ name: 'Open', kind: 'open' }], is_default: 'true' }, 'is_default'],
    ];
    for (const [method, url, body, field] of cases) {
      const r = await call(app, admin, method as 'POST', url, { body });
      expect(r.status, `${method} ${url} ${JSON.stringify(body)}: ${brief(r)}`).toBe(400);
      expect(r.json.errors.map((e: { field: string }) => e.field), JSON.stringify(body)).toContain(field);
    }
    expect((await call(app, admin, 'GET', `/contacts/${c.json.id}`)).json).toMatchObject({ name: 'Ana', tags: [] });
    // What arrives as text is still read as what it stands for: a number in the query, one tag as a list.
    const page = await call(app, admin, 'GET', '/contacts?limit=1&tag=vip');
    expect(page.status, brief(page)).toBe(200);
  });

  it('takes an empty body with Content-Type: application/json as no body, and still refuses __proto__ keys', async () => {
    const json = { 'content-type': 'application/json' };
    const c = await call(app, admin, 'POST', '/contacts', { body: { phone: phone() } });
    // Workflow tools send the header on every request: a DELETE is a DELETE.
    const gone = await call(app, admin, 'DELETE', `/contacts/${c.json.id}`, { body: '', headers: json });
    expect(gone.status, brief(gone)).toBe(204);
    // A route that needs a body says so.
    const empty = await call(app, admin, 'POST', '/contacts', { body: '', headers: json });
    expect(empty.status, brief(empty)).toBe(400);
    expect(empty.json.code).toBe('validation');
    const broken = await call(app, admin, 'POST', '/contacts', { body: '{"phone":', headers: json });
    expect(broken.status).toBe(400);
    expect(broken.json.code).toBe('bad_json');
    const poisoned = await call(app, admin, 'POST', '/contacts', { body: `{"phone":"${phone()}","custom_fields":{"__proto__":{"x":1}}}`, headers: json });
    expect(poisoned.status, brief(poisoned)).toBe(400);
    const charset = await call(app, admin, 'POST', '/contacts', { body: JSON.stringify({ phone: phone() }), headers: { 'content-type': 'application/json; charset=utf-8' } });
    expect(charset.status, brief(charset)).toBe(201);
  });

  it('refuses a contact name or a tag of spaces or invisible characters alone', async () => {
    const c = await call(app, admin, 'POST', '/contacts', { body: { phone: phone() } });
    for (const body of [{ name: '\u200B' }, { name: ' \u00AD ' }, { tags: [' '] }, { tags: ['ok', '\u2060'] }]) {
      const r = await call(app, admin, 'PATCH', `/contacts/${c.json.id}`, { body });
      expect(r.status, JSON.stringify(body)).toBe(400);
      expect(r.json.errors[0].message, JSON.stringify(body)).toBe('must not be blank');
    }
    const created = await call(app, admin, 'POST', '/contacts', { body: { phone: phone(), name: '\u200B' } });
    expect(created.status).toBe(400);
  });

  it('refuses fields sent to a route that takes no body, and takes none or {}', async () => {
    const c = await call(app, admin, 'POST', '/contacts', { body: { phone: phone() } });
    const withFields = await call(app, admin, 'DELETE', `/contacts/${c.json.id}`, { body: { reason: 'duplicate', hard: true } });
    expect(withFields.status, brief(withFields)).toBe(400);
    expect(withFields.json.errors).toEqual([{ field: 'reason', message: 'is not allowed' }, { field: 'hard', message: 'is not allowed' }]);
    const replay = await call(app, admin, 'POST', '/admin/dead-letters/00000000-0000-4000-8000-000000000000/replay', { body: { queue: 'x' } });
    expect(replay.status, brief(replay)).toBe(400);
    expect(replay.json.errors).toEqual([{ field: 'queue', message: 'is not allowed' }]);
    expect((await call(app, admin, 'DELETE', `/contacts/${c.json.id}`, { body: {} })).status).toBe(204);
    expect((await call(app, admin, 'POST', '/admin/dead-letters/00000000-0000-4000-8000-000000000000/replay')).status).toBe(404);
  });
});

