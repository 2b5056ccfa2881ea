import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { registerTenant, startApp, walkPages, type Tenant } from './read-api-harness.ts';
import { at, seedChannel, seedContact, seedMessage, seedSession } from './seed-conversations.ts';

const SESSION_KEYS = [
  'id', 'contact_id', 'channel_id', 'status', 'started_at', 'last_activity_at', 'ended_at', 'end_reason', 'timeout_minutes',
  'message_count', 'messages_from_contact', 'messages_from_agent', 'first_response_seconds', 'duration_seconds', 'reply_window_until',
].sort();

let db: Database;
let a: Tenant;
let b: Tenant;
let ch1: string;
let ch2: string;
let x: string;
let y: string;
const s: Record<string, string> = {};

beforeAll(async () => {
  const started = await startApp();
  db = started.db;
  a = await registerTenant(started.app);
  b = await registerTenant(started.app);
  ch1 = await seedChannel(db, a.projectId, 'sales');
  ch2 = await seedChannel(db, a.projectId, 'support');
  x = await seedContact(db, a.projectId, { name: 'Xavier' });
  y = await seedContact(db, a.projectId, { name: 'Yara' });
  const p = a.projectId;
  s.xOld = await seedSession(db, { projectId: p, contactId: x, channelId: ch1, startedAt: at(0), lastActivityAt: at(12), endedAt: at(42), endReason: 'inactivity_timeout', counts: { total: 4, fromContact: 3, fromAgent: 1 }, firstResponseSeconds: 95 });
  s.yActive = await seedSession(db, { projectId: p, contactId: y, channelId: ch1, startedAt: at(10), lastActivityAt: at(15), counts: { total: 2, fromContact: 2, fromAgent: 0 } });
  // Two sessions start at the same instant: the id decides their order, the same on every page.
  s.xActive = await seedSession(db, { projectId: p, contactId: x, channelId: ch2, startedAt: at(20) });
  s.yEnded = await seedSession(db, { projectId: p, contactId: y, channelId: ch2, startedAt: at(20), endedAt: at(25), endReason: 'closed_by_agent' });
  s.xNew = await seedSession(db, { projectId: p, contactId: x, channelId: ch1, startedAt: at(50) });
});

const ids = async (t: Tenant, qs = '') => (await t.call('GET', `/sessions${qs}`)).json.data.map((r: any) => r.id);

describe('GET /sessions', () => {
  it('lists newest first by start, ties broken by id, and pages through all of them once', async () => {
    const tie = [s.xActive, s.yEnded].sort().reverse();
    const expected = [s.xNew, ...tie, s.yActive, s.xOld];
    expect(await ids(a)).toEqual(expected);
    const { items, pages } = await walkPages(a, '/sessions', 2);
    expect(pages).toBe(3);
    expect(items.map((r) => r.id)).toEqual(expected);
    expect(items.every((r) => Object.keys(r).sort().join() === SESSION_KEYS.join())).toBe(true);
  });

  it('filters by status, contact and channel, alone or together', async () => {
    expect((await ids(a, '?status=active')).sort()).toEqual([s.yActive, s.xActive, s.xNew].sort());
    expect((await ids(a, '?status=ended')).sort()).toEqual([s.xOld, s.yEnded].sort());
    expect(await ids(a, `?contact_id=${x}`)).toEqual([s.xNew, s.xActive, s.xOld]);
    expect((await ids(a, `?channel_id=${ch2}`)).sort()).toEqual([s.xActive, s.yEnded].sort());
    expect(await ids(a, `?contact_id=${x}&channel_id=${ch1}&status=active`)).toEqual([s.xNew]);
  });

  it('rejects an unknown status and a malformed id with 400', async () => {
    const r = await a.call('GET', '/sessions?status=open');
    expect(r.status).toBe(400);
    expect(r.json.code).toBe('validation');
    expect((await a.call('GET', '/sessions?contact_id=42')).status).toBe(400);
    expect((await a.call('GET', '/sessions/not-a-uuid')).status).toBe(400);
  });
});

describe('GET /sessions/{id}', () => {
  it('returns the counters, the end and the duration of an ended session', async () => {
    const r = await a.call('GET', `/sessions/${s.xOld}`);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      id: s.xOld, contact_id: x, channel_id: ch1, status: 'ended', started_at: at(0), last_activity_at: at(12), ended_at: at(42),
      end_reason: 'inactivity_timeout', timeout_minutes: 30, message_count: 4, messages_from_contact: 3, messages_from_agent: 1,
      first_response_seconds: 95, duration_seconds: 42 * 60, reply_window_until: null,
    });
  });

  it('measures an active session up to its latest message', async () => {
    const r = await a.call('GET', `/sessions/${s.yActive}`);
    expect(r.json).toMatchObject({ status: 'active', ended_at: null, end_reason: null, first_response_seconds: null, duration_seconds: 300 });
  });
});

describe('GET /sessions/{id}/messages', () => {
  it('reads the conversation oldest first by provider timestamp, whatever order the messages were stored in', async () => {
    const base = { projectId: a.projectId, contactId: x, channelId: ch1, sessionId: s.xOld };
    // Stored late: a webhook that arrived after the reply to it.
    const late = await seedMessage(db, { ...base, timestamp: at(3), text: 'second' });
    const first = await seedMessage(db, { ...base, timestamp: at(1), text: 'first' });
    const reply = await seedMessage(db, { ...base, timestamp: at(5), text: 'third', fromMe: true });
    const last = await seedMessage(db, { ...base, timestamp: at(12), text: 'fourth' });
    await seedMessage(db, { ...base, sessionId: s.xNew, timestamp: at(50), text: 'other session' });

    const { items, pages } = await walkPages(a, `/sessions/${s.xOld}/messages`, 3);
    expect(pages).toBe(2);
    expect(items.map((m) => m.id)).toEqual([first, late, reply, last]);
    expect(items.map((m) => m.text)).toEqual(['first', 'second', 'third', 'fourth']);
    expect(items[2]).toMatchObject({ direction: 'outbound', from_me: true, session_id: s.xOld });
  });

  it('answers 404 for an unknown session', async () => {
    const r = await a.call('GET', '/sessions/0190a000-0000-7000-8000-000000000000/messages');
    expect(r.status).toBe(404);
    expect(r.json.code).toBe('not_found');
  });
});

describe('tenancy', () => {
  it("answers 404 for another project's session and never lists it, even filtered by its contact", async () => {
    expect((await b.call('GET', `/sessions/${s.xOld}`)).status).toBe(404);
    expect((await b.call('GET', `/sessions/${s.xOld}/messages`)).status).toBe(404);
    expect(await ids(b)).toEqual([]);
    expect(await ids(b, `?contact_id=${x}`)).toEqual([]);
    expect(await ids(b, `?channel_id=${ch1}`)).toEqual([]);
  });
});
