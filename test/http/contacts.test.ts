import { beforeAll, describe, expect, it } from 'vitest';
import type { FastifyInstance } from 'fastify';
import type { Database, Queryable } from '../../src/db/database.ts';
import { listTimeline } from '../../src/db/timeline-read.sql.ts';
import { findContact } from '../../src/db/contacts-read.sql.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { asTenant, eventsOf, registerTenant, startApp, walkPages, type Tenant } from './read-api-harness.ts';
import { at, seedChannel, seedContact, seedMessage, seedSession } from './seed-conversations.ts';

const CONTACT_KEYS = [
  'id', 'name', 'phone', 'email', 'wa_id', 'tags', 'custom_fields', 'source', 'ad_attribution',
  'first_interaction_at', 'last_interaction_at', 'created_at', 'updated_at',
].sort();

let app: FastifyInstance;
let db: Database;
let a: Tenant;
let b: Tenant;

beforeAll(async () => {
  ({ app, db } = await startApp());
  a = await registerTenant(app);
  b = await registerTenant(app);
});

const nameSource = async (id: string) => (await db.query('SELECT name_source FROM contacts WHERE id = $1', [id])).rows[0].name_source;

describe('POST /contacts', () => {
  it('stores the phone in E.164, marks the name as set by a person and appends contact.created', async () => {
    const r = await a.call('POST', '/contacts', { phone: '+55 (11) 98888-0001', name: ' Ana Souza ', email: 'ana@example.com', tags: ['vip', 'vip', ' lead '], custom_fields: { plan: 'gold' } });
    expect(r.status).toBe(201);
    expect(Object.keys(r.json).sort()).toEqual(CONTACT_KEYS);
    expect(r.json).toMatchObject({ phone: '+5511988880001', wa_id: '5511988880001', name: 'Ana Souza', email: 'ana@example.com', tags: ['vip', 'lead'], custom_fields: { plan: 'gold' }, source: 'api', ad_attribution: null, first_interaction_at: null });
    expect(new Date(r.json.created_at).toISOString()).toBe(r.json.created_at);
    expect(r.headers.location).toBe(`/api/v1/contacts/${r.json.id}`);
    expect(await nameSource(r.json.id)).toBe('user');

    const events = await eventsOf(db, r.json.id);
    expect(events.map((e) => e.type)).toEqual(['contact.created']);
    expect(events[0].project_id).toBe(a.projectId);
    expect(events[0].data).toMatchObject({ contact_id: r.json.id, phone: '+5511988880001', name: 'Ana Souza', tags: ['vip', 'lead'] });
  });

  it('answers 400 with a clear detail for a phone that is not a phone', async () => {
    for (const phone of ['12', 'call me', '123456789@lid', '+0 11 9999 0000']) {
      const r = await a.call('POST', '/contacts', { phone });
      expect(r.status, phone).toBe(400);
      expect(r.json.code).toBe('validation');
      expect(r.json.detail).toMatch(/phone .* E\.164/);
    }
    expect((await a.call('POST', '/contacts', { phone: '+5511988880002', email: 'not-an-email' })).status).toBe(400);
    expect((await a.call('POST', '/contacts', { phone: '+5511988880002', wa_lid: 'x' })).status).toBe(400);
  });

  it('answers 409 conflict naming the existing contact when the phone is taken, in any formatting', async () => {
    const first = await a.call('POST', '/contacts', { phone: '5511988880003' });
    const again = await a.call('POST', '/contacts', { phone: '+55 11 98888-0003', name: 'Other' });
    expect(again.status).toBe(409);
    expect(again.json.code).toBe('conflict');
    expect(again.json.detail).toContain('+5511988880003');
    expect(again.json.detail).toContain(first.json.id);
    expect((await eventsOf(db, first.json.id)).length).toBe(1);
    // Uniqueness is per project.
    expect((await b.call('POST', '/contacts', { phone: '+5511988880003' })).status).toBe(201);
  });
});

describe('GET /contacts', () => {
  // A tenant of its own, so the exact listings below see only what this block seeds.
  let listing: Tenant;

  beforeAll(async () => {
    const t = await registerTenant(app);
    listing = t;
    // Two share a created_at: the id must break the tie the same way on every page.
    const times = [at(0), at(1), at(1), at(2), at(3), at(4), at(5)];
    for (const [i, createdAt] of times.entries()) {
      await seedContact(db, t.projectId, { createdAt, name: `Person ${i}`, phone: `+55219777700${i}${i}`, tags: i % 2 ? ['vip'] : ['lead'] });
    }
    await seedContact(db, t.projectId, { createdAt: at(6), name: 'Zoë 50% Off', phone: '+447700900123', tags: ['vip', 'lead'] });
  });

  it('lists newest first and pages through every contact exactly once', async () => {
    const all = await listing.call('GET', '/contacts?limit=200');
    expect(all.json.data.every((c: any) => Object.keys(c).sort().join() === CONTACT_KEYS.join())).toBe(true);
    const expected = (await db.query('SELECT id FROM contacts WHERE project_id = $1 ORDER BY created_at DESC, id DESC', [listing.projectId])).rows.map((r) => r.id);
    expect(all.json.data.map((c: any) => c.id)).toEqual(expected);
    expect(all.json.next_cursor).toBeNull();

    const walked = await walkPages(listing, '/contacts', 3);
    expect(walked.pages).toBe(3);
    expect(walked.items.map((c) => c.id)).toEqual(expected);
  });

  it('searches name, email and phone in any formatting, and treats % as text', async () => {
    const search = async (q: string) => (await listing.call('GET', `/contacts?search=${encodeURIComponent(q)}`)).json.data.map((c: any) => c.name);
    expect(await search('person 3')).toEqual(['Person 3']);
    expect(await search('+55 (21) 97777-0033')).toEqual(['Person 3']);
    expect(await search('9777700')).toHaveLength(7);
    expect(await search('447700')).toEqual(['Zoë 50% Off']);
    expect(await search('+44 (0)7700')).toEqual(['Zoë 50% Off']); // the trunk prefix, as a phone is stored without it
    expect(await search('50%')).toEqual(['Zoë 50% Off']);
    expect(await search('%')).toEqual(['Zoë 50% Off']);
    expect(await search('nobody')).toEqual([]);
    // Blank — spaces or invisible characters alone — is no search: every contact, as with none.
    const every = (await search('')).length;
    expect(every).toBeGreaterThan(7);
    for (const blank of ['   ', '\u200B', ' \u2060 ']) expect(await search(blank), JSON.stringify(blank)).toHaveLength(every);
  });

  it('filters by tag, and by several tags at once', async () => {
    const tagged = async (qs: string) => (await listing.call('GET', `/contacts?${qs}`)).json.data.length;
    expect(await tagged('tag=vip')).toBe(4);
    expect(await tagged('tag=lead')).toBe(5);
    expect(await tagged('tag=vip&tag=lead')).toBe(1);
    expect(await tagged('tag=none')).toBe(0);
    expect(await tagged('tag=%20vip%20')).toBe(4); // tags are stored trimmed, and so is the one asked for
  });

  it('answers 400 for a blank tag, which no contact can have, instead of an empty list', async () => {
    for (const qs of ['tag=%20', 'tag=vip&tag=%20%20', 'tag=%E2%80%8B', 'tag=%C2%AD%20']) {
      const r = await listing.call('GET', `/contacts?${qs}`);
      expect(r.status, qs).toBe(400);
      expect(r.json).toMatchObject({ code: 'validation', detail: 'tag must not be blank' });
    }
    // 64 characters is a tag's limit once trimmed, as stored: spaces around it are not counted.
    const long = 'x'.repeat(64);
    expect((await listing.call('GET', `/contacts?tag=%20${long}%20`)).status).toBe(200);
    const over = await listing.call('GET', `/contacts?tag=${long}y`);
    expect(over.status).toBe(400);
    expect(over.json).toMatchObject({ code: 'validation', detail: 'a tag has at most 64 characters' });
  });

  it('rejects a forged cursor and a limit above 200', async () => {
    expect((await listing.call('GET', '/contacts?cursor=bm9wZQ')).json.code).toBe('validation');
    expect((await listing.call('GET', '/contacts?limit=201')).status).toBe(400);
  });
});

describe('PATCH /contacts/{id}', () => {
  it('updates name, email, tags and merges custom fields, appending contact.updated with the changed fields', async () => {
    const c = (await a.call('POST', '/contacts', { phone: '+5511988880010', email: 'old@example.com', custom_fields: { plan: 'gold', city: 'SP' } })).json;
    const r = await a.call('PATCH', `/contacts/${c.id}`, { name: 'Bruno', email: null, tags: ['customer'], custom_fields: { city: null, seats: 3 } });
    expect(r.status).toBe(200);
    expect(r.json).toMatchObject({ name: 'Bruno', email: null, tags: ['customer'], custom_fields: { plan: 'gold', seats: 3 }, phone: '+5511988880010' });
    expect(r.json.custom_fields).not.toHaveProperty('city');
    const events = await eventsOf(db, c.id);
    expect(events.map((e) => e.type)).toEqual(['contact.created', 'contact.updated']);
    expect(events[1].data.changed_fields.sort()).toEqual(['custom_fields', 'email', 'name', 'tags']);

    // The same patch again changes nothing and says nothing.
    expect((await a.call('PATCH', `/contacts/${c.id}`, { name: 'Bruno', tags: ['customer'] })).status).toBe(200);
    expect((await eventsOf(db, c.id)).length).toBe(2);
  });

  it('claims a WhatsApp push name for the user, so later push names cannot replace it', async () => {
    const id = await seedContact(db, a.projectId, { name: 'Bru 🙂', nameSource: 'push' });
    expect((await a.call('PATCH', `/contacts/${id}`, { name: 'Bru 🙂' })).status).toBe(200);
    expect(await nameSource(id)).toBe('user');
    await a.call('PATCH', `/contacts/${id}`, { name: null });
    expect(await nameSource(id)).toBeNull();
  });

  it('refuses to change the phone or blank the name, and answers 404 for an unknown contact', async () => {
    const c = (await a.call('POST', '/contacts', { phone: '+5511988880011' })).json;
    expect((await a.call('PATCH', `/contacts/${c.id}`, { phone: '+5511988880012' })).status).toBe(400);
    expect((await a.call('PATCH', `/contacts/${c.id}`, { name: '   ' })).status).toBe(400);
    expect((await a.call('PATCH', '/contacts/0190a000-0000-7000-8000-000000000000', { name: 'x' })).status).toBe(404);
  });
});

describe('DELETE /contacts/{id}', () => {
  it('hides the contact, appends contact.deleted and frees the phone', async () => {
    const c = (await a.call('POST', '/contacts', { phone: '+5511988880020', name: 'Gone Soon' })).json;
    expect((await a.call('DELETE', `/contacts/${c.id}`)).status).toBe(204);
    expect((await a.call('GET', `/contacts/${c.id}`)).status).toBe(404);
    expect((await a.call('PATCH', `/contacts/${c.id}`, { name: 'x' })).status).toBe(404);
    expect((await a.call('DELETE', `/contacts/${c.id}`)).status).toBe(404);
    expect((await a.call('GET', '/contacts?search=Gone%20Soon')).json.data).toEqual([]);
    const events = await eventsOf(db, c.id);
    expect(events.map((e) => e.type)).toEqual(['contact.created', 'contact.deleted']);
    expect(events[1].data).toMatchObject({ contact_id: c.id, phone: '+5511988880020' });
    expect((await a.call('POST', '/contacts', { phone: '+5511988880020' })).status).toBe(201);
  });

  it("ends the contact's active sessions (reason contact_deleted, with session.ended) and leaves its ended ones and its history alone", async () => {
    const [c1, c2] = [await seedChannel(db, a.projectId, 'del-1'), await seedChannel(db, a.projectId, 'del-2')];
    const contactId = await seedContact(db, a.projectId, { name: 'Leaving' });
    const now = Date.now();
    const iso = (minutesAgo: number) => new Date(now - minutesAgo * 60_000).toISOString();
    const old = await seedSession(db, { projectId: a.projectId, contactId, channelId: c1, startedAt: iso(120), endedAt: iso(100), counts: { total: 1, fromContact: 1, fromAgent: 0 } });
    const live1 = await seedSession(db, { projectId: a.projectId, contactId, channelId: c1, startedAt: iso(10), lastActivityAt: iso(2) });
    const live2 = await seedSession(db, { projectId: a.projectId, contactId, channelId: c2, startedAt: iso(5) });
    // Past its due time, and the sweeper not there yet: it timed out, and ends so.
    const c3 = await seedChannel(db, a.projectId, 'del-3');
    const overdue = await seedSession(db, { projectId: a.projectId, contactId, channelId: c3, startedAt: iso(90), lastActivityAt: iso(80) });
    await db.query(`UPDATE sessions SET due_at = last_activity_at + make_interval(mins => timeout_minutes) WHERE id = $1`, [overdue]);
    const m = await seedMessage(db, { projectId: a.projectId, contactId, channelId: c1, sessionId: live1, timestamp: iso(2) });

    expect((await a.call('DELETE', `/contacts/${contactId}`)).status).toBe(204);
    for (const id of [live1, live2]) {
      const s = (await a.call('GET', `/sessions/${id}`)).json;
      expect(s).toMatchObject({ status: 'ended', end_reason: 'contact_deleted' });
      expect(Date.parse(s.ended_at)).toBeGreaterThanOrEqual(now - 1000);
      const events = await eventsOf(db, id);
      expect(events.map((e) => e.type)).toEqual(['session.ended']);
      expect(events[0].data).toMatchObject({ session_id: id, contact_id: contactId, reason: 'contact_deleted', closed_by: expect.stringMatching(/^api_key:/) });
    }
    expect((await a.call('GET', `/sessions/${overdue}`)).json).toMatchObject({ status: 'ended', end_reason: 'inactivity_timeout', ended_at: iso(50) });
    expect((await eventsOf(db, overdue))[0].data).toMatchObject({ reason: 'inactivity_timeout', closed_by: null });
    expect((await a.call('GET', `/sessions/${old}`)).json).toMatchObject({ status: 'ended', end_reason: 'inactivity_timeout', ended_at: iso(100) });
    expect(await eventsOf(db, old)).toEqual([]);
    expect((await a.call('GET', `/sessions?contact_id=${contactId}&status=active`)).json.data).toEqual([]);
    expect((await a.call('GET', `/messages/${m}`)).json).toMatchObject({ id: m, session_id: live1 });
    // The contact's own event comes after its sessions' ends.
    const seqs = (await db.query<{ type: string }>(`SELECT type FROM outbox WHERE aggregate_id = ANY($1::text[]) ORDER BY seq`, [[contactId, live1, live2, overdue]])).rows;
    expect(seqs.map((r) => r.type)).toEqual(['session.ended', 'session.ended', 'session.ended', 'contact.deleted']);
  });
});

describe("a contact's sessions, messages and timeline", () => {
  let contactId: string;
  let s1: string;
  let s2: string;
  const m: string[] = [];

  beforeAll(async () => {
    const channelId = await seedChannel(db, a.projectId);
    contactId = await seedContact(db, a.projectId, { name: 'Carla' });
    const base = { projectId: a.projectId, contactId, channelId };
    s1 = await seedSession(db, { ...base, startedAt: at(0), lastActivityAt: at(10), endedAt: at(40), counts: { total: 3, fromContact: 2, fromAgent: 1 } });
    s2 = await seedSession(db, { ...base, startedAt: at(60), lastActivityAt: at(61) });
    for (const [min, sessionId] of [[0, s1], [5, s1], [10, s1], [60, s2], [61, s2]] as const) {
      m.push(await seedMessage(db, { ...base, sessionId, timestamp: at(min), fromMe: min === 5 }));
    }
  });

  it('lists the sessions and messages newest first', async () => {
    expect((await a.call('GET', `/contacts/${contactId}/sessions`)).json.data.map((s: any) => s.id)).toEqual([s2, s1]);
    expect((await a.call('GET', `/contacts/${contactId}/messages`)).json.data.map((x: any) => x.id)).toEqual([...m].reverse());
  });

  it('merges messages, session starts and ends into one newest-first stream that pages cleanly', async () => {
    const expected = [
      ['message', m[4], at(61)], ['message', m[3], at(60)], ['session_started', s2, at(60)], ['session_ended', s1, at(40)],
      ['message', m[2], at(10)], ['message', m[1], at(5)], ['message', m[0], at(0)], ['session_started', s1, at(0)],
    ];
    const { items, pages } = await walkPages(a, `/contacts/${contactId}/timeline`, 3);
    expect(pages).toBe(3);
    expect(items.map((i) => [i.type, (i.message ?? i.session).id, i.at])).toEqual(expected);
    expect(items[3].session).toMatchObject({ status: 'ended', ended_at: at(40), duration_seconds: 2400, message_count: 3 });
    expect(items[0].message).toMatchObject({ contact_id: contactId, session_id: s2, direction: 'inbound' });
  });
});

describe('a timeline paged through ties', () => {
  it('gives the same stream at every page size when kinds and messages share instants', async () => {
    const channelId = await seedChannel(db, a.projectId);
    const contactId = await seedContact(db, a.projectId, { name: 'Tie' });
    const base = { projectId: a.projectId, contactId, channelId };
    // A session ending at the instant the next starts, three messages at each of those instants.
    const s1 = await seedSession(db, { ...base, startedAt: at(0), lastActivityAt: at(30), endedAt: at(30) });
    const s2 = await seedSession(db, { ...base, startedAt: at(30), lastActivityAt: at(31) });
    for (const [min, sessionId] of [[0, s1], [0, s1], [0, s1], [30, s1], [30, s2], [30, s2], [31, s2]] as const) {
      await seedMessage(db, { ...base, sessionId, timestamp: at(min) });
    }
    const whole = await walkPages(a, `/contacts/${contactId}/timeline`, 50);
    expect(whole.items).toHaveLength(10);
    const key = (i: any) => `${i.type}:${(i.message ?? i.session).id}`;
    for (const size of [1, 2, 3, 4]) {
      const paged = await walkPages(a, `/contacts/${contactId}/timeline`, size);
      expect(paged.items.map(key), `pages of ${size}`).toEqual(whole.items.map(key));
    }
    // A cursor of another list is a 400 (not a point of this one, and not a 500); so is one of the
    // same messages in the other order (the session's oldest first against the inbox's newest).
    const messagesPage = await a.call('GET', `/contacts/${contactId}/messages?limit=1`);
    const crossed = await a.call('GET', `/contacts/${contactId}/timeline?cursor=${messagesPage.json.next_cursor}`);
    expect(crossed.status, JSON.stringify(crossed.json)).toBe(400);
    expect(crossed.json.errors).toEqual([{ field: 'cursor', message: 'use next_cursor from a previous page of the same list' }]);
    const reversed = await a.call('GET', `/sessions/${s2}/messages?cursor=${messagesPage.json.next_cursor}`);
    expect(reversed.status, JSON.stringify(reversed.json)).toBe(400);
    const inbox = await a.call('GET', `/messages?contact_id=${contactId}&cursor=${messagesPage.json.next_cursor}`);
    expect(inbox.status, JSON.stringify(inbox.json)).toBe(200);
    // Newest first; at one instant an end, then the messages, then a start.
    expect(whole.items.map((i: any) => [i.type, i.at])).toEqual([
      ['message', at(31)],
      ['session_ended', at(30)], ['message', at(30)], ['message', at(30)], ['message', at(30)], ['session_started', at(30)],
      ['message', at(0)], ['message', at(0)], ['message', at(0)], ['session_started', at(0)],
    ]);
  });
});

describe('a timeline page read while a message goes away', () => {
  it('leaves out a message deleted between reading the page and fetching its rows (an echo folded into its reply) instead of failing', async () => {
    const channelId = await seedChannel(db, a.projectId, 'fold');
    const contactId = await seedContact(db, a.projectId, { name: 'Dora' });
    const base = { projectId: a.projectId, contactId, channelId };
    const sessionId = await seedSession(db, { ...base, startedAt: at(0), lastActivityAt: at(2) });
    const [m0, echo, m2] = [
      await seedMessage(db, { ...base, sessionId, timestamp: at(0) }),
      await seedMessage(db, { ...base, sessionId, timestamp: at(1), fromMe: true }),
      await seedMessage(db, { ...base, sessionId, timestamp: at(2) }),
    ];
    let deleted = false;
    const racing: Queryable = {
      async query(sql, params) {
        const r = await db.query(sql, params);
        if (!deleted && sql.includes('UNION ALL')) {
          deleted = true;
          await db.query('DELETE FROM messages WHERE id = $1', [echo]);
        }
        return r as never;
      },
      exec: (sql) => db.exec(sql),
    };
    const page = await listTimeline(racing, { projectId: a.projectId, contactId, limit: 10 });
    expect(deleted).toBe(true);
    expect(page.rows.map((e) => [e.type, e.type === 'message' ? e.message.id : e.session.id])).toEqual([
      ['message', m2], ['message', m0], ['session_started', sessionId],
    ]);
    expect(page.nextCursor).toBeNull();
  });
});

describe('tenancy and access', () => {
  it("answers 404 for another project's contact on every route, and never lists it", async () => {
    const c = (await a.call('POST', '/contacts', { phone: '+5511988880030', name: 'Only A' })).json;
    for (const [method, url, body] of [
      ['GET', `/contacts/${c.id}`], ['PATCH', `/contacts/${c.id}`, { name: 'hijack' }], ['DELETE', `/contacts/${c.id}`],
      ['GET', `/contacts/${c.id}/sessions`], ['GET', `/contacts/${c.id}/messages`], ['GET', `/contacts/${c.id}/timeline`],
    ] as const) {
      const r = await b.call(method, url, body);
      expect(r.status, `${method} ${url}`).toBe(404);
      expect(JSON.stringify(r.json)).not.toContain('Only A');
    }
    expect((await b.call('GET', '/contacts?search=Only%20A')).json.data).toEqual([]);
    expect((await a.call('GET', `/contacts/${c.id}`)).json.name).toBe('Only A');
  });

  it('hides rows of another project through row-level security even when a query names that project', async () => {
    const c = (await a.call('POST', '/contacts', { phone: '+5511988880031' })).json;
    expect(await withTransaction(db, (tx) => findContact(tx, a.projectId, c.id), { projectId: b.projectId })).toBeUndefined();
    expect(await withTransaction(db, (tx) => findContact(tx, a.projectId, c.id), { projectId: a.projectId })).toBeDefined();
  });

  it('needs a credential, and lets a viewer read but not write', async () => {
    expect((await app.inject({ method: 'GET', url: '/api/v1/contacts' })).statusCode).toBe(401);
    const k = await a.call('POST', '/api-keys', { name: 'read only', role: 'viewer' });
    expect(k.status).toBe(201);
    const viewer = asTenant(app, a.projectId, k.json.key);
    expect((await viewer.call('GET', '/contacts')).status).toBe(200);
    const denied = await viewer.call('POST', '/contacts', { phone: '+5511988880032' });
    expect(denied.status).toBe(403);
    expect(denied.json.code).toBe('forbidden');
  });
});
