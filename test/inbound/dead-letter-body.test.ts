// What a raw-queue dead letter keeps (src/inbound/dead-letter-body.ts), message by message: a batch
// is taken apart and put together again around what is left out; a channel deleted since, or one
// that cannot be read, owns no number; only a database that cannot answer now makes the record
// wait; a body that cannot be filtered is not kept.
import { describe, expect, it } from 'vitest';
import type { Delivery } from '../../src/broker/broker.ts';
import { markUnavailable } from '../../src/db/unavailable.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { rawDeadLetterBody } from '../../src/inbound/dead-letter-body.ts';
import { EnvelopeHeaders } from '../../src/inbound/ingress.ts';
import { BATCH_HEADER, decodeRawBatch, encodeRawBatch, type RawItem } from '../../src/inbound/raw-batch.ts';

const OURS = '200000000000001';
const THEIRS = '200000000000999';
const change = (phoneNumberId: string, text: string) => ({
  field: 'messages',
  value: { messaging_product: 'whatsapp', metadata: { phone_number_id: phoneNumberId }, contacts: [{ wa_id: '5521990000001' }], messages: [{ id: `wamid.${text}`, type: 'text', text: { body: text } }] },
});
const cloudBody = (...changes: unknown[]) => ({ object: 'whatsapp_business_account', entry: [{ id: 'waba', changes }] });
const item = (provider: string, channelId: string, body: unknown, raw?: string): RawItem => ({
  messageId: `m-${channelId}-${provider}`,
  headers: { [EnvelopeHeaders.provider]: provider, [EnvelopeHeaders.channelId]: channelId, [EnvelopeHeaders.receivedAt]: '2026-12-06T00:00:00.000Z' },
  body: Buffer.from(raw ?? JSON.stringify(body)),
});
const delivery = (m: RawItem | { body: Buffer; headers: Record<string, string> }): Delivery => ({ messageId: 'dl', queue: 'inbound.raw', routingKey: 'inbound.raw', attempt: 5, ...m });
const CLOUD = uuidv7();
const WAHA = uuidv7();
const DELETED = uuidv7();
const channels: Record<string, { config: Record<string, unknown> }> = { [CLOUD]: { config: { phone_number_id: OURS } }, [WAHA]: { config: {} } };
const withheld = (phoneNumberId: string) => ({ field: 'messages', value: { metadata: { phone_number_id: phoneNumberId } } });

describe('rawDeadLetterBody', () => {
  const keep = rawDeadLetterBody(async (id) => channels[id]);

  it("leaves out another number's change of a Cloud body, keeping its place, field and number", async () => {
    const body = cloudBody(change(OURS, 'mine'), change(THEIRS, 'secret'));
    const kept = await keep(delivery(item('whatsapp_cloud', CLOUD, body)));
    expect(JSON.parse(kept.toString('utf8'))).toEqual(cloudBody(change(OURS, 'mine'), withheld(THEIRS)));
  });

  it('hands back the very bytes when nothing is left out, and for providers that keep everything', async () => {
    const cloud = item('whatsapp_cloud', CLOUD, undefined, JSON.stringify(cloudBody(change(OURS, 'mine')), null, 2));
    const waha = item('waha', WAHA, { event: 'message', payload: { body: 'oi' } });
    expect(await keep(delivery(cloud))).toBe(cloud.body);
    expect(await keep(delivery(waha))).toBe(waha.body);
    const notJson = item('whatsapp_cloud', CLOUD, undefined, '{"entry": [');
    expect(await keep(delivery(notJson))).toBe(notJson.body);
  });

  it('takes a batch apart and puts it together again, each webhook with its id and envelope', async () => {
    const waha = item('waha', WAHA, { event: 'message', payload: { body: 'oi' } });
    const cloud = item('whatsapp_cloud', CLOUD, cloudBody(change(THEIRS, 'secret'), change(OURS, 'mine')));
    const batch = { body: encodeRawBatch([waha, cloud]), headers: { [BATCH_HEADER]: '2' } };
    const items = decodeRawBatch(await keep(delivery(batch)), 2);
    expect(items.map((i) => [i.messageId, i.headers])).toEqual([[waha.messageId, waha.headers], [cloud.messageId, cloud.headers]]);
    expect(items[0].body.equals(waha.body)).toBe(true);
    expect(JSON.parse(items[1].body.toString('utf8'))).toEqual(cloudBody(withheld(THEIRS), change(OURS, 'mine')));
    // A batch with nothing to leave out is the same bytes.
    const plain = { body: encodeRawBatch([waha]), headers: { [BATCH_HEADER]: '1' } };
    expect(await keep(delivery(plain))).toBe(plain.body);
  });

  it('keeps of a channel deleted since no change that names a number', async () => {
    const body = cloudBody(change(OURS, 'mine'), change(THEIRS, 'secret'));
    const kept = await keep(delivery(item('whatsapp_cloud', DELETED, body)));
    expect(JSON.parse(kept.toString('utf8'))).toEqual(cloudBody(withheld(OURS), withheld(THEIRS)));
  });

  it('keeps no change that names a number when the channel cannot be read, or its id is no channel id', async () => {
    const body = cloudBody(change(OURS, 'mine'), change(THEIRS, 'secret'));
    const unreadable = rawDeadLetterBody(async () => Promise.reject(new Error('cannot open the channel (test)')));
    expect(JSON.parse((await unreadable(delivery(item('whatsapp_cloud', CLOUD, body)))).toString('utf8'))).toEqual(cloudBody(withheld(OURS), withheld(THEIRS)));
    expect(JSON.parse((await keep(delivery(item('whatsapp_cloud', 'not-a-uuid', body)))).toString('utf8'))).toEqual(cloudBody(withheld(OURS), withheld(THEIRS)));
  });

  it('rejects only when the database cannot answer now, so the death is recorded later rather than whole', async () => {
    const away = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' });
    const failing = rawDeadLetterBody(async () => Promise.reject(markUnavailable(away)));
    await expect(failing(delivery(item('whatsapp_cloud', CLOUD, cloudBody(change(THEIRS, 'secret')))))).rejects.toBe(away);
  });

  it('keeps nothing of a body it cannot encode again, only why', async () => {
    const nested = '['.repeat(200_000) + ']'.repeat(200_000);
    const raw = `{"object":"whatsapp_business_account","entry":[{"id":"waba","changes":[${JSON.stringify(change(THEIRS, 'secret'))},{"field":"messages","value":{"metadata":{"phone_number_id":"${OURS}"},"deep":${nested}}}]}]}`;
    const kept = (await keep(delivery(item('whatsapp_cloud', CLOUD, undefined, raw)))).toString('utf8');
    expect(kept).not.toContain('secret');
    expect(JSON.parse(kept)).toEqual({ left_out: expect.stringMatching(/^this webhook could not be filtered .*: Maximum call stack size exceeded$/) });
  });
});
