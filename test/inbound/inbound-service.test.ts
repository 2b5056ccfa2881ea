// The inbound transaction itself: what it costs when there is nothing to store.
import { describe, expect, it } from 'vitest';
import { parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';
import { makeInboundService, type InboundChannel } from '../../src/services/inbound.service.ts';
import { countingDb } from '../support/counting-db.ts';
import { fixture, inboundCount, startInbound, wahaText } from './harness.ts';

describe('the inbound service', () => {
  it('counts a webhook with nothing to store without opening a transaction', async () => {
    const t = await startInbound({ role: 'api' });
    const ch = await t.createChannel();
    const { db, counts } = countingDb(t.db);
    const service = makeInboundService({ db });
    const channel: InboundChannel = { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha', sessionTimeoutMinutes: 30 };
    const apply = (body: unknown) => service.apply(t.projectId, [{ channel, events: parseWahaEvent(body), receivedAt: new Date() }]);

    const status = fixture('gows-status-post');
    const ignored = parseWahaEvent(status);
    expect(ignored.map((e) => e.kind)).toEqual(['ignored']);
    const label = { event: ignored[0].event, result: (ignored[0] as { reason: string }).reason };
    const before = await inboundCount(label);
    expect(await apply(status)).toEqual([{}]);
    expect(counts.transactions).toBe(0);
    expect(await inboundCount(label)).toBe(before + 1);

    // Something to store: one transaction, as before.
    await apply(wahaText('5511944449999', 'oi', { id: 'SVC01' }));
    expect(counts.transactions).toBe(1);
  });
});
