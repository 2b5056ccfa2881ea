// Input that passes a JSON Schema but not PostgreSQL: each must be a 400 naming what is wrong,
// never a 500. Every case here was a 500 before its check existed.
import Fastify from 'fastify';
import { beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import { uuidv7 } from '../../src/domain/ids.ts';
import { errorHandler } from '../../src/http/errors.ts';
import { makeTestDb, onCleanup } from '../support/env.ts';
import { call, makeTenant, register, startApp, type TestApp, type Tenant } from './harness.ts';

const forge = (tuple: unknown[]) => Buffer.from(JSON.stringify(tuple)).toString('base64url');
/** A body as raw JSON text, so that escapes like `\ud800` reach the server as written. */
const raw = (text: string) => ({ body: text, headers: { 'content-type': 'application/json' } });

let t: TestApp;
let app: FastifyInstance;
let a: Tenant;
let admin: string;

beforeAll(async () => {
  t = await startApp();
  app = t.app;
  a = await makeTenant(app);
  admin = a.keys.admin;
});

function expect400(r: { status: number; json: any; headers: Record<string, unknown> }, field?: string, message?: RegExp): void {
  expect(r.status, JSON.stringify(r.json)).toBe(400);
  expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
  expect(r.json.code).toBe('validation');
  if (field !== undefined) expect(r.json.errors?.map((e: { field?: string }) => e.field)).toContain(field);
  if (message) expect(JSON.stringify(r.json.errors ?? r.json.detail)).toMatch(message);
}

describe('text PostgreSQL cannot store', () => {
  it('refuses U+0000 in a query string', async () => {
    expect400(await call(app, admin, 'GET', '/contacts?search=%00'), 'search', /U\+0000/);
    expect400(await call(app, admin, 'GET', '/contacts?tag=a%00b'), 'tag');
  });

  it('refuses U+0000 and unpaired surrogates in a body, in values and in keys, naming the field', async () => {
    expect400(await call(app, admin, 'POST', '/contacts', raw('{"phone":"+5511999990001","name":"a\\u0000b"}')), 'name');
    const c = await call(app, admin, 'POST', '/contacts', { body: { phone: '+5511999990002', name: 'Ana' } });
    expect(c.status).toBe(201);
    expect400(await call(app, admin, 'PATCH', `/contacts/${c.json.id}`, raw('{"custom_fields":{"plan":"\\ud800"}}')), 'custom_fields.plan');
    expect400(await call(app, admin, 'PATCH', `/contacts/${c.json.id}`, raw('{"custom_fields":{"p\\u0000":1}}')), 'custom_fields.p\u0000');
    expect400(await call(app, admin, 'POST', '/pipelines', raw('{"name":"Sales","statuses":[{"name":"x\\udc00","kind":"open"}]}')), 'statuses.0.name');
    // A whole pair is an ordinary character (an emoji) and is kept.
    const ok = await call(app, admin, 'PATCH', `/contacts/${c.json.id}`, raw('{"custom_fields":{"plan":"\\ud83d\\ude00"}}'));
    expect(ok.status).toBe(200);
    expect(ok.json.custom_fields.plan).toBe('😀');
  });
});

describe('ids', () => {
  const urn = `urn:uuid:${uuidv7()}`;

  it('refuses a urn:uuid: id in a path, a query and a body as "must be a UUID"', async () => {
    expect400(await call(app, admin, 'GET', `/contacts/${urn}`), 'id', /must be a UUID/);
    expect400(await call(app, admin, 'GET', `/messages?contact_id=${urn}`), 'contact_id', /must be a UUID/);
    expect400(await call(app, admin, 'POST', '/messages', { body: { channel_id: urn, contact_id: uuidv7(), type: 'text', text: 'hi' } }), 'channel_id', /must be a UUID/);
  });

  it('takes a project id in upper case, in the path and in X-Project-ID', async () => {
    const upper = a.projectId.toUpperCase();
    expect((await call(app, admin, 'GET', `/projects/${upper}`)).status).toBe(200);
    expect((await call(app, admin, 'GET', '/contacts', { headers: { 'x-project-id': upper } })).status).toBe(200);
  });

  it('keeps the last admin when the member id comes in upper case', async () => {
    const r = await call(app, admin, 'DELETE', `/projects/${a.projectId}/members/${a.userId.toUpperCase()}`);
    expect(r.status).toBe(409);
    const members = await call(app, admin, 'GET', `/projects/${a.projectId}/members`);
    expect(members.json.data.map((m: { user_id: string }) => m.user_id)).toContain(a.userId);
  });
});

describe('cursors and dates', () => {
  it('refuses a cursor on a day that does not exist', async () => {
    expect400(await call(app, admin, 'GET', `/contacts?cursor=${forge(['2024-02-31T00:00:00.000000Z', uuidv7()])}`), 'cursor');
  });

  it('refuses a leap second and year 0', async () => {
    for (const since of ['2016-12-31T23:59:60Z', '0000-01-01T00:00:00Z']) {
      expect400(await call(app, admin, 'POST', `/webhook-subscriptions/${uuidv7()}/recover`, { body: { since } }), 'since');
    }
    expect400(await call(app, admin, 'GET', '/events?since=0000-01-01T00:00:00Z'), 'since');
    expect400(await call(app, admin, 'GET', '/events?until=0000-01-01T00:00:00Z'), 'until');
  });
});

describe('names and fields', () => {
  it('refuses names that are only spaces', async () => {
    expect400(await call(app, admin, 'POST', '/pipelines', { body: { name: '   ', statuses: [{ name: 'New', kind: 'open' }] } }), 'name', /must not be blank/);
    expect400(await call(app, admin, 'POST', '/pipelines', { body: { name: 'Sales', statuses: [{ name: ' ', kind: 'open' }] } }), 'statuses.0.name');
    expect400(await call(app, undefined, 'POST', '/auth/register', { body: { name: '  ', email: `blank-${uuidv7()}@example.com`, password: 'correct horse battery staple' } }), 'name');
    expect400(await call(app, admin, 'POST', '/api-keys', { body: { name: '\t', role: 'agent' } }), 'name');
    expect400(await call(app, admin, 'PATCH', `/channels/${uuidv7()}`, { body: { name: '  ' } }), 'name');
  });

  it('names a misspelt field of an account body instead of ignoring it', async () => {
    expect400(await call(app, admin, 'PATCH', `/projects/${a.projectId}`, { body: { nmae: 'New name' } }), 'nmae', /is not allowed/);
    const r = await register(app);
    expect(r.status).toBe(201);
    expect400(await call(app, undefined, 'POST', '/auth/register', { body: { name: 'X', email: `x-${uuidv7()}@example.com`, password: 'correct horse battery staple', password_confirmation: 'correct horse battery staple' } }), 'password_confirmation');
  });
});

describe("a project's default pipeline", () => {
  it('refuses an id that is not a uuid, and stores an upper-case one as the pipeline it names', async () => {
    expect400(await call(app, admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { default_pipeline_id: 'abc' } } }), 'settings.default_pipeline_id');
    const p = await call(app, admin, 'POST', '/pipelines', { body: { name: 'Upsell', statuses: [{ name: 'New', kind: 'open' }] } });
    expect(p.status).toBe(201);
    const set = await call(app, admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { default_pipeline_id: p.json.id.toUpperCase() } } });
    expect(set.status).toBe(200);
    expect(set.json.settings.default_pipeline_id).toBe(p.json.id);
    const listed = await call(app, admin, 'GET', '/pipelines');
    const defaults = listed.json.data.filter((x: { is_default: boolean }) => x.is_default).map((x: { id: string }) => x.id);
    expect(defaults).toEqual([p.json.id]);
  });
});

describe('bodies nested past reason', () => {
  it('answers a body nested ten thousand deep with a 4xx, not a 500', async () => {
    const deep = `{"name":"x","email":"d-${uuidv7()}@example.com","password":"correct horse battery staple","extra":${'['.repeat(10_000)}${']'.repeat(10_000)}}`;
    const r = await call(app, undefined, 'POST', '/auth/register', raw(deep));
    expect(r.status).toBe(400);
  });
});

describe('URLs that cannot be read', () => {
  it('answers problem+json with the request id for bad percent-encoding', async () => {
    const r = await app.inject({ method: 'GET', url: '/api/v1/contacts/%E0%A4%A', headers: { authorization: `Bearer ${admin}` } });
    expect(r.statusCode).toBe(400);
    expect(r.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(r.json()).toMatchObject({ code: 'validation', status: 400 });
    expect(r.headers['x-request-id']).toBe(r.json().request_id);
  });
});

describe('the backstop', () => {
  it("answers 400 for a value the database refused that no check caught, with the database's words", async () => {
    const { db } = await makeTestDb();
    const probe = Fastify();
    probe.setErrorHandler(errorHandler);
    probe.get('/cast', async () => db.query("SELECT 'urn:uuid:x'::uuid"));
    probe.get('/bug', async () => db.query('SELECT * FROM no_such_table'));
    probe.get('/ours', async () => db.query('SELECT 1 / 0'));
    onCleanup(() => probe.close());
    const refused = await probe.inject({ method: 'GET', url: '/cast' });
    expect(refused.statusCode).toBe(400);
    expect(refused.json()).toMatchObject({ code: 'validation' });
    expect(refused.json().detail).toMatch(/uuid/);
    // Not every database error is the caller's: a missing table stays an opaque 500.
    const broken = await probe.inject({ method: 'GET', url: '/bug' });
    expect(broken.statusCode).toBe(500);
    expect(broken.body).not.toMatch(/no_such_table/);
    // Nor is every data exception: no request value divides by zero.
    expect((await probe.inject({ method: 'GET', url: '/ours' })).statusCode).toBe(500);
  });
});
