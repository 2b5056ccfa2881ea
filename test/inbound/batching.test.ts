// Webhooks the ingress accepts together share one raw-queue message (its group commit); the
// processor takes such a batch apart and treats each webhook as if it had come alone: stored once,
// parked alone when malformed, retried alone when it cannot be applied yet.
import { describe, expect, it } from 'vitest';
import { PROJECT_HEADER } from '../../src/broker/broker.ts';
import { Queues } from '../../src/broker/topology.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeChannelDirectory } from '../../src/inbound/channel-directory.ts';
import { EnvelopeHeaders } from '../../src/inbound/ingress.ts';
import { makeInboundHandler, startInboundProcessor } from '../../src/inbound/processor.ts';
import { markUnavailable } from '../../src/db/unavailable.ts';
import type { InboundService } from '../../src/services/inbound.service.ts';
import { BATCH_HEADER, decodeRawBatch, encodeRawBatch, type RawItem } from '../../src/inbound/raw-batch.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { onCleanup, waitFor } from '../support/env.ts';
import { count, fixture, inboundCount, messageByKey, SECRET_KEY, startInbound, wahaText, type Channel, type Inbound } from './harness.ts';

describe('the batch format', () => {
  const item = (i: number): RawItem => ({ messageId: uuidv7(), headers: { 'x-provider': 'waha', 'x-n': String(i) }, body: Buffer.from(`{"n":${i},"text":"ção ✓"}`) });

  it('gives back every webhook, bytes and envelope as they went in', () => {
    const items = [item(1), item(2), { ...item(3), body: Buffer.alloc(0) }];
    const back = decodeRawBatch(encodeRawBatch(items), 3);
    expect(back.map((b) => [b.messageId, b.headers, b.body.toString('hex')])).toEqual(items.map((b) => [b.messageId, b.headers, b.body.toString('hex')]));
  });

  it('refuses a truncated body, a count that does not match, and an envelope of the wrong shape', () => {
    const whole = encodeRawBatch([item(1), item(2)]);
    expect(() => decodeRawBatch(whole.subarray(0, whole.length - 3))).toThrow(/truncated/);
    expect(() => decodeRawBatch(whole.subarray(0, 2))).toThrow(/truncated/);
    expect(() => decodeRawBatch(whole, 3)).toThrow(/header says 3/);
    const meta = Buffer.from(JSON.stringify({ id: 'x', headers: { n: 1 } }));
    const bad = Buffer.concat([Buffer.from([0, 0, 0, meta.length]), meta, Buffer.from([0, 0, 0, 0])]);
    expect(() => decodeRawBatch(bad)).toThrow(/not \{id, headers\}/);
  });
});

function startProcessor(t: Inbound) {
  const channels = makeChannelDirectory({ db: t.db, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger });
  return startInboundProcessor({ db: t.db, broker: t.broker, logger: silentLogger, channels }).then((p) => (onCleanup(() => p.stop()), p));
}

const envelope = (t: Inbound, ch: Channel): Record<string, string> => ({
  [EnvelopeHeaders.provider]: 'waha',
  [EnvelopeHeaders.channelId]: ch.id,
  [EnvelopeHeaders.projectId]: t.projectId,
  [EnvelopeHeaders.receivedAt]: new Date().toISOString(),
});

const sendBatch = (t: Inbound, bodies: unknown[], ch: Channel, headers?: Record<string, string>, raw?: Buffer) =>
  t.broker.send(Queues.inboundRaw, [
    {
      messageId: uuidv7(),
      headers: headers ?? { [BATCH_HEADER]: String(bodies.length), [PROJECT_HEADER]: t.projectId },
      body: raw ?? encodeRawBatch(bodies.map((b) => ({ messageId: uuidv7(), headers: envelope(t, ch), body: Buffer.from(typeof b === 'string' ? b : JSON.stringify(b)) }))),
    },
  ]);

describe('webhooks accepted together', () => {
  it('travel in fewer queue messages than webhooks, and every one is stored once', async () => {
    const t = await startInbound({ role: 'api' });
    const ch = await t.createChannel();
    const answers = await Promise.all(Array.from({ length: 30 }, (_, i) => t.post(ch, wahaText(`55119333300${String(i).padStart(2, '0')}`, `oi ${i}`, { id: `GROUP${i}` }))));
    expect(answers.map((a) => a.status)).toEqual(answers.map(() => 200));
    expect(new Set(answers.map((a) => a.json.event_id)).size).toBe(30);
    const [raw] = await t.broker.stats([Queues.inboundRaw]);
    expect(raw.depth).toBeGreaterThanOrEqual(1);
    expect(raw.depth).toBeLessThan(30);

    await startProcessor(t);
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])) === 30, '30 messages stored');
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE project_id = $1', [t.projectId])).toBe(30);
  });

  it('parks a malformed webhook of a batch alone and stores the others', async () => {
    const t = await startInbound();
    const ch = await t.createChannel();
    await sendBatch(t, [wahaText('5511933330101', 'antes', { id: 'BATCHOK1' }), '{"event": 42}', wahaText('5511933330102', 'depois', { id: 'BATCHOK2' })], ch);
    await waitFor(() => messageByKey(t.db, ch.id, 'BATCHOK2'), 'the third webhook stored');
    expect(await messageByKey(t.db, ch.id, 'BATCHOK1')).toBeTruthy();
    const parkedRows = () => t.db.query<{ body: Uint8Array; headers: Record<string, string> }>('SELECT body, headers FROM parse_errors WHERE channel_id = $1', [ch.id]);
    await waitFor(async () => (await parkedRows()).rows.length > 0, 'the bad one parked');
    const parked = (await parkedRows()).rows;
    expect(parked).toHaveLength(1);
    expect(Buffer.from(parked[0].body).toString()).toBe('{"event": 42}');
    expect(parked[0].headers[EnvelopeHeaders.channelId]).toBe(ch.id);
  });

  it('parks a batch that is not one in parse_errors, for its project', async () => {
    const t = await startInbound();
    const ch = await t.createChannel();
    await sendBatch(t, [], ch, { [BATCH_HEADER]: '2', [PROJECT_HEADER]: t.projectId }, Buffer.from([0, 0, 0, 9, 1, 2]));
    const parked = () => t.db.query<{ reason: string; project_id: string }>(`SELECT reason, project_id FROM parse_errors WHERE reason LIKE 'a malformed batch%'`);
    await waitFor(async () => (await parked()).rows.length > 0, 'the batch parked');
    const { rows } = await parked();
    expect(rows).toEqual([{ reason: expect.stringMatching(/truncated/), project_id: t.projectId }]);
  });

  it('sends a webhook that cannot be applied yet back alone; the others are not redone', async () => {
    // The ack waits in its retries until the test posts its message: a schedule long enough to
    // outlive that on a loaded machine (the retries of 200, 400, 800 and 1600 ms ran out in 3 s).
    const t = await startInbound({ retryDelaysMs: [200, 500, 1000, 2000, 4000, 8000, 15000] });
    const ch = await t.createChannel();
    // An ack for a message not stored yet, beside a message that can be stored now.
    const duplicates = await inboundCount({ event: 'message', result: 'duplicate' });
    const missing = await inboundCount({ event: 'message.ack', result: 'missing_target' });
    await sendBatch(t, [fixture('ack-read'), wahaText('5511933330201', 'já', { id: 'BATCHNOW' })], ch);
    await waitFor(() => messageByKey(t.db, ch.id, 'BATCHNOW'), 'the storable one stored');
    // The ack comes round again (its retries), the message does not: the batch was not redelivered.
    await waitFor(async () => (await inboundCount({ event: 'message.ack', result: 'missing_target' })) >= missing + 2, 'the ack retried');
    expect(await inboundCount({ event: 'message', result: 'duplicate' })).toBe(duplicates);
    await t.post(ch, fixture('gows-from-me-phone'));
    await waitFor(async () => (await messageByKey(t.db, ch.id, '3EB0DEV00000000OUT01'))?.status === 'read', 'the ack applied on its retry');
    const now = await messageByKey(t.db, ch.id, 'BATCHNOW');
    expect(now.status).toBe('received');
    const contact = await t.db.query<{ total_messages: number }>('SELECT total_messages FROM contacts WHERE id = $1', [now.contact_id]);
    expect(contact.rows[0].total_messages).toBe(1);
  });
});

describe('a batch none of whose webhooks can be applied', () => {
  it('is retried whole, then parked for its project and counted, not dead-lettered', async () => {
    const t = await startInbound({ retryDelaysMs: [50, 100] });
    const ch = await t.createChannel();
    const before = await inboundCount({ provider: 'waha', event: 'webhook', result: 'unknown_target' });
    // Two acks for a message never stored: nothing of the batch can be applied, on any attempt.
    await sendBatch(t, [fixture('ack-read'), fixture('ack-read')], ch);
    const parked = await waitFor(async () => {
      const r = await t.db.query<{ reason: string; project_id: string }>('SELECT reason, project_id FROM parse_errors WHERE channel_id = $1', [ch.id]);
      return r.rows.length === 2 ? r.rows : undefined;
    }, 'both acks parked', 30_000);
    for (const p of parked) {
      expect(p.project_id).toBe(t.projectId);
      expect(p.reason).toMatch(/refers to a message this channel does not have \(yet\), after 3 attempts/);
    }
    expect(await inboundCount({ provider: 'waha', event: 'webhook', result: 'unknown_target' })).toBe(before + 2);
    expect((await t.api('GET', '/admin/dead-letters')).json.data.filter((d: any) => d.queue === Queues.inboundRaw)).toEqual([]);
    const errors = await t.api('GET', '/admin/parse-errors');
    expect(errors.json.data.filter((e: any) => e.channel_id === ch.id).map((e: any) => e.event_type)).toEqual(['message.ack', 'message.ack']);
  }, 60_000);
});

describe('a batch whose transaction finds the database gone', () => {
  it('is not tried again item by item: every item fails with it, in one attempt', async () => {
    const t = await startInbound();
    const ch = await t.createChannel();
    const channels = makeChannelDirectory({ db: t.db, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger });
    const applied: number[] = [];
    const down: InboundService = {
      async apply(_projectId, items) {
        applied.push(items.length);
        throw markUnavailable(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }));
      },
    } as InboundService;
    const handle = makeInboundHandler({ db: t.db, broker: t.broker, logger: silentLogger, channels, service: down });
    const bodies = Array.from({ length: 5 }, (_, i) => wahaText(`551193333040${i}`, `oi ${i}`, { id: `DOWN${i}` }));
    const body = encodeRawBatch(bodies.map((b) => ({ messageId: uuidv7(), headers: envelope(t, ch), body: Buffer.from(JSON.stringify(b)) })));
    await expect(handle({ messageId: uuidv7(), queue: Queues.inboundRaw, routingKey: Queues.inboundRaw, body, headers: { [BATCH_HEADER]: '5', [PROJECT_HEADER]: t.projectId }, attempt: 1 }))
      .rejects.toThrow(/ECONNREFUSED/);
    expect(applied).toEqual([5]);
  });
});
