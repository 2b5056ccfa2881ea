import type { FastifyInstance } from 'fastify';
import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { registerTenant, startApp, walkPages, type Tenant } from './read-api-harness.ts';
import { at, seedChannel, seedContact, seedMessage, seedSession } from './seed-conversations.ts';

const MESSAGE_KEYS = [
  'id', 'contact_id', 'session_id', 'channel_id', 'direction', 'from_me', 'type', 'text', 'media', 'location', 'contact_card',
  'external_id', 'status', 'sent_at', 'delivered_at', 'read_at', 'played_at', 'timestamp', 'reply_to_external_id', 'metadata',
  'edited_at', 'revoked_at', 'reactions', 'error',
].sort();

let db: Database;
let app: FastifyInstance;
let a: Tenant;
let b: Tenant;
let channelId: string;
let x: string;
let y: string;
let sx: string;
let sy: string;
const m: Record<string, string> = {};

beforeAll(async () => {
  const started = await startApp();
  db = started.db;
  app = started.app;
  a = await registerTenant(started.app);
  b = await registerTenant(started.app);
  const p = a.projectId;
  channelId = await seedChannel(db, p);
  x = await seedContact(db, p, { name: 'Xavier' });
  y = await seedContact(db, p, { name: 'Yara' });
  sx = await seedSession(db, { projectId: p, contactId: x, channelId, startedAt: at(0) });
  sy = await seedSession(db, { projectId: p, contactId: y, channelId, startedAt: at(0) });
  const bx = { projectId: p, contactId: x, channelId, sessionId: sx };
  m.text = await seedMessage(db, { ...bx, timestamp: at(1), text: 'oi', metadata: { event: 'message', engine: 'GOWS' } });
  // Stored extras (provider media id, hash) stay out of the API; either mime spelling is read.
  m.image = await seedMessage(db, {
    ...bx, timestamp: at(2), type: 'image', text: 'the receipt',
    media: { url: 'https://media.example/r.jpg', mime_type: 'image/jpeg', mediaId: 'abc', sha256: 'ff' },
  });
  m.reply = await seedMessage(db, { ...bx, timestamp: at(3), fromMe: true, text: 'thanks!', status: 'delivered', replyTo: 'wamid.quoted' });
  await db.query(`UPDATE messages SET delivered_at = $2 WHERE id = $1`, [m.reply, at(4)]);
  m.location = await seedMessage(db, { ...bx, timestamp: at(5), type: 'location', text: null, location: { latitude: -23.55, longitude: -46.63, name: 'Office' } });
  // Two messages in the same second (provider timestamps have second precision).
  m.tieA = await seedMessage(db, { projectId: p, contactId: y, channelId, sessionId: sy, timestamp: at(6), text: 'a' });
  m.tieB = await seedMessage(db, { projectId: p, contactId: y, channelId, sessionId: sy, timestamp: at(6), text: 'b' });
  m.card = await seedMessage(db, { projectId: p, contactId: y, channelId, sessionId: null, timestamp: at(7), type: 'contact', text: null, contactCard: { vcards: ['BEGIN:VCARD…'], displayName: 'Bia' } });
});

const ids = async (t: Tenant, qs = '') => (await t.call('GET', `/messages${qs}`)).json.data.map((r: any) => r.id);

describe('GET /messages', () => {
  it('lists newest first by provider timestamp, ties broken by id, and pages through all once', async () => {
    const tie = [m.tieA, m.tieB].sort().reverse();
    const expected = [m.card, ...tie, m.location, m.reply, m.image, m.text];
    expect(await ids(a)).toEqual(expected);
    const { items, pages } = await walkPages(a, '/messages', 3);
    expect(pages).toBe(3);
    expect(items.map((r) => r.id)).toEqual(expected);
    expect(items.every((r) => Object.keys(r).sort().join() === MESSAGE_KEYS.join())).toBe(true);
  });

  it('filters by contact and by session', async () => {
    expect(await ids(a, `?contact_id=${x}`)).toEqual([m.location, m.reply, m.image, m.text]);
    expect((await ids(a, `?session_id=${sy}`)).sort()).toEqual([m.tieA, m.tieB].sort());
    expect(await ids(a, `?contact_id=${y}&session_id=${sx}`)).toEqual([]);
    expect((await a.call('GET', '/messages?session_id=nope')).status).toBe(400);
  });
});

describe('GET /messages/{id}', () => {
  it('returns a text message in the contract shape', async () => {
    const r = await a.call('GET', `/messages/${m.text}`);
    expect(r.status).toBe(200);
    expect(r.json).toEqual({
      id: m.text, contact_id: x, session_id: sx, channel_id: channelId, direction: 'inbound', from_me: false, type: 'text', text: 'oi',
      media: null, location: null, contact_card: null, external_id: `wamid.${m.text}`, status: 'received', sent_at: null,
      delivered_at: null, read_at: null, played_at: null, timestamp: at(1), reply_to_external_id: null, metadata: { event: 'message', engine: 'GOWS' },
      edited_at: null, revoked_at: null, reactions: [], error: null,
    });
  });

  it('shows media, location, contact cards, replies and delivery times', async () => {
    const get = async (id: string) => (await a.call('GET', `/messages/${id}`)).json;
    expect((await get(m.image)).media).toEqual({ url: 'https://media.example/r.jpg', mimetype: 'image/jpeg', filename: null });
    expect((await get(m.image)).text).toBe('the receipt');
    expect((await get(m.location)).location).toEqual({ latitude: -23.55, longitude: -46.63, name: 'Office', address: null });
    expect((await get(m.card)).contact_card).toEqual({ vcards: ['BEGIN:VCARD…'], displayName: 'Bia' });
    expect(await get(m.card)).toMatchObject({ session_id: null, type: 'contact' });
    expect(await get(m.reply)).toMatchObject({
      direction: 'outbound', from_me: true, status: 'delivered', sent_at: at(3), delivered_at: at(4), read_at: null, reply_to_external_id: 'wamid.quoted',
    });
  });

  it('shows why a message failed in one shape, whichever writer stored the reason', async () => {
    // A project of its own, so these messages stay out of the list tests above.
    const c = await registerTenant(app);
    const ch = await seedChannel(db, c.projectId);
    const who = await seedContact(db, c.projectId, { name: 'Zé' });
    const failed = async (error: Record<string, unknown> | null, status = 'failed') => {
      const id = await seedMessage(db, { projectId: c.projectId, contactId: who, channelId: ch, timestamp: at(10), fromMe: true, status });
      await db.query('UPDATE messages SET error = $2::jsonb WHERE id = $1', [id, error === null ? null : JSON.stringify(error)]);
      return (await c.call('GET', `/messages/${id}`)).json;
    };
    // Our sender, when the provider refused the send (the 24-hour window).
    expect((await failed({ message: 'outside the 24-hour window', code: '131047', attempts: 1 })).error).toEqual({
      code: '131047', title: null, message: 'outside the 24-hour window', details: null,
    });
    // A provider's failed status: Meta's numeric code, title and details.
    expect((await failed({ code: 131026, title: 'Message undeliverable', message: 'Message undeliverable', details: 'Receiver is incapable' })).error).toEqual({
      code: '131026', title: 'Message undeliverable', message: 'Message undeliverable', details: 'Receiver is incapable',
    });
    // A reason with a title only still has words to read; a failure without a reason shows null.
    expect((await failed({ code: 131000, title: 'Something went wrong' })).error).toEqual({ code: '131000', title: 'Something went wrong', message: 'Something went wrong', details: null });
    expect((await failed(null)).error).toBeNull();
    // A queued message shows the last attempt's error while it waits for a retry.
    expect(await failed({ message: 'WAHA answered 502', code: '502', attempt: 1, retrying: true }, 'queued')).toMatchObject({
      status: 'queued', error: { code: '502', message: 'WAHA answered 502', title: null, details: null },
    });
    // The list shows the same field.
    const listed = (await c.call('GET', '/messages')).json.data;
    expect(listed.map((r: any) => r.error?.code ?? null).sort()).toEqual(['131000', '131026', '131047', '502', null].sort());
  });

  it('answers 404 for an unknown id and 400 for a malformed one', async () => {
    expect((await a.call('GET', '/messages/0190a000-0000-7000-8000-000000000000')).status).toBe(404);
    expect((await a.call('GET', '/messages/123')).status).toBe(400);
  });
});

describe('tenancy', () => {
  it("answers 404 for another project's message and never lists it", async () => {
    const r = await b.call('GET', `/messages/${m.text}`);
    expect(r.status).toBe(404);
    expect(JSON.stringify(r.json)).not.toContain('oi');
    expect(await ids(b)).toEqual([]);
    expect(await ids(b, `?contact_id=${x}`)).toEqual([]);
    expect(await ids(b, `?session_id=${sx}`)).toEqual([]);
  });
});
