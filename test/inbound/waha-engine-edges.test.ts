// The engine edge-case fixtures (webjs-ack-read, noweb-broadcast-from-contact, …) through the real
// ingress, the raw queue and the processor, read back from the database: what each one changes,
// and what it must leave alone.
import { beforeAll, describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { contactOf, count, fixture, inboundCount, messageByKey, startInbound, type Channel, type Inbound } from './harness.ts';

let t: Inbound;
let ch: Channel;

beforeAll(async () => {
  t = await startInbound();
  ch = await t.createChannel();
});

async function post(name: string): Promise<void> {
  const r = await t.post(ch, fixture(name));
  expect(r.status, name).toBe(200);
}

const contactByPhone = async (phone: string) =>
  (await t.db.query('SELECT * FROM contacts WHERE project_id = $1 AND phone = $2', [t.projectId, phone])).rows[0];

describe('WAHA engine edge cases through the ingress', () => {
  it('a WEBJS read ack dates read_at by its webhook, an hour after the message went out', async () => {
    await post('webjs-from-me');
    await waitFor(() => messageByKey(t.db, ch.id, '3EB0DEV0000000WEBJS02'), 'our message stored');
    await post('webjs-ack-read');
    const m = await waitFor(async () => {
      const row = await messageByKey(t.db, ch.id, '3EB0DEV0000000WEBJS02');
      return row?.status === 'read' ? row : undefined;
    }, 'the message read');
    expect(new Date(m.read_at).toISOString()).toBe('2025-11-30T01:13:00.000Z');
    expect(new Date(m.delivered_at).toISOString()).toBe('2025-11-30T01:13:00.000Z'); // read implies delivered
    expect(new Date(m.timestamp).toISOString()).toBe('2025-11-30T00:12:59.000Z');
  });

  it("a contact's message to a broadcast list of theirs lands in their conversation", async () => {
    await post('noweb-broadcast-from-contact');
    const m = await waitFor(() => messageByKey(t.db, ch.id, '3EB0DEV00000000BRD02'), 'the broadcast message stored');
    expect(m).toMatchObject({ type: 'text', text: 'Oi, tem estoque do tênis azul?', from_me: false, direction: 'inbound' });
    expect(await contactOf(t.db, m.contact_id)).toMatchObject({ phone: '+5511900000007', name: 'Tiago Nunes' });
  });

  it('an album photo is stored as an image; a WEBJS location keeps name and address; an undownloaded file keeps its type and name', async () => {
    for (const name of ['noweb-album-image', 'webjs-location-named', 'webjs-document-not-downloaded']) await post(name);
    const photo = await waitFor(() => messageByKey(t.db, ch.id, '3EB0DEV00000000ALB01'), 'the album photo stored');
    expect(photo).toMatchObject({
      type: 'image', text: 'foto 2 do pedido',
      media: { url: 'http://localhost:3000/api/files/loja-noweb/3EB0DEV00000000ALB01.jpeg', mimetype: 'image/jpeg', filename: null },
    });
    const place = await waitFor(() => messageByKey(t.db, ch.id, '3EB0DEV00000000LOC02'), 'the location stored');
    expect(place).toMatchObject({ type: 'location', text: null, location: { latitude: -23.5613, longitude: -46.6565, name: 'Loja Centro', address: 'Av. Paulista 1000, São Paulo' } });
    const doc = await waitFor(() => messageByKey(t.db, ch.id, '3EB0DEV00000000DOC02'), 'the document stored');
    expect(doc).toMatchObject({ type: 'document', media: { url: null, mimetype: 'application/pdf', filename: 'nota-fiscal.pdf' } });
  });

  it("WhatsApp's security-code notice and a group ack naming us by LID are counted and change nothing", async () => {
    const notices = await inboundCount({ event: 'message', result: 'protocol_message' });
    const groupAcks = await inboundCount({ event: 'message.ack', result: 'group' });
    const missing = await inboundCount({ event: 'message.ack', result: 'missing_target' });
    const parkedBefore = await count(t.db, 'SELECT 1 FROM parse_errors WHERE channel_id = $1', [ch.id]);
    await post('webjs-e2e-notification');
    await post('webjs-group-ack-lid');
    await waitFor(async () => (await inboundCount({ event: 'message', result: 'protocol_message' })) === notices + 1, 'the notice counted');
    await waitFor(async () => (await inboundCount({ event: 'message.ack', result: 'group' })) === groupAcks + 1, 'the group ack counted');
    expect(await messageByKey(t.db, ch.id, '3EB0DEV000000000E2E01')).toBeUndefined();
    expect(await contactByPhone('+5511900000014')).toBeUndefined(); // a notice alone starts no conversation
    expect(await inboundCount({ event: 'message.ack', result: 'missing_target' })).toBe(missing); // not retried as an ack waiting for its message
    expect(await count(t.db, 'SELECT 1 FROM parse_errors WHERE channel_id = $1', [ch.id])).toBe(parkedBefore);
  });

  it('an edit with an empty body is parked and leaves the text as it was', async () => {
    await post('gows-text');
    await waitFor(() => messageByKey(t.db, ch.id, '3EB0DEV000000000TEXT01'), 'the message stored');
    await post('gows-edited-empty');
    const parked = await waitFor(async () => (await t.db.query('SELECT reason FROM parse_errors WHERE channel_id = $1', [ch.id])).rows[0], 'the edit parked');
    expect(parked.reason).toMatch(/payload\.body is empty: an edit names its new text/);
    expect((await messageByKey(t.db, ch.id, '3EB0DEV000000000TEXT01')).text).toBe('Oi! Vocês abrem no sábado?');
  });

  it('a NOWEB message timed by a protobuf Long is stored at that time, not parked', async () => {
    await post('noweb-long-timestamp');
    const m = await waitFor(() => messageByKey(t.db, ch.id, '3EB0DEV0000000NOWEB05'), 'the message stored');
    expect(m).toMatchObject({ type: 'text', text: 'Vocês têm o tamanho 42?' });
    expect(new Date(m.timestamp).toISOString()).toBe('2025-11-30T01:13:59.000Z');
    expect(await contactOf(t.db, m.contact_id)).toMatchObject({ phone: '+5511900000018', name: 'Sérgio Pinto' });
    expect(await count(t.db, 'SELECT 1 FROM parse_errors WHERE channel_id = $1 AND reason LIKE $2', [ch.id, '%timestamp%'])).toBe(0);
  });

  it('a NOWEB list answer keeps the chosen row as its text', async () => {
    await post('noweb-list-response');
    const m = await waitFor(() => messageByKey(t.db, ch.id, '3EB0DEV0000000NOWEB06'), 'the answer stored');
    expect(m).toMatchObject({ type: 'unknown', text: 'Entrega expressa', reply_to_external_id: '3EB0DEV0000000NOWOUT02', metadata: { raw_type: 'listResponseMessage' } });
  });

  it("a message in the business's own chat is counted, and the business does not become its own contact", async () => {
    const own = await inboundCount({ event: 'message.any', result: 'own_chat' });
    await post('gows-own-chat');
    await waitFor(async () => (await inboundCount({ event: 'message.any', result: 'own_chat' })) === own + 1, 'the message counted');
    expect(await messageByKey(t.db, ch.id, '3EB0DEV00000000OWN01')).toBeUndefined();
    expect(await contactByPhone('+5511900000000')).toBeUndefined();
  });
});
