// The spill drainer with large webhooks: a send holds about maxBatchBytes of bodies, not 200 rows
// whatever their size (a Cloud webhook reaches 3 MiB: 200 of them did not fit one query parameter on
// the Postgres-backed queue, and the same rows failed and came back for ever).
import { describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker/broker.ts';
import { Queues } from '../../src/broker/topology.ts';
import { spillInboundEvent } from '../../src/db/inbound-events.sql.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { startSpillDrainer } from '../../src/inbound/drainer.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { onCleanup, waitFor } from '../support/env.ts';
import { count, startInbound } from './harness.ts';

const MiB = 1024 * 1024;

describe('the spill drainer', () => {
  it('sends spilled webhooks in batches of about maxBatchBytes, oldest first, and empties the table', async () => {
    const t = await startInbound({ role: 'api' }); // no processor and no drainer of its own
    const ch = await t.createChannel();
    const ids: string[] = [];
    for (let i = 0; i < 5; i++) {
      const id = uuidv7();
      ids.push(id);
      await spillInboundEvent(t.db, { id, provider: 'waha', channelId: ch.id, headers: { 'x-channel-id': ch.id }, body: Buffer.alloc(1.5 * MiB, 48 + i), receivedAt: new Date() });
    }
    const sends: Array<{ bytes: number; ids: string[] }> = [];
    const recording = Object.create(t.broker) as Broker;
    recording.send = (queue, msgs, o) => {
      sends.push({ bytes: msgs.reduce((n, m) => n + m.body.length, 0), ids: msgs.map((m) => m.messageId) });
      return t.broker.send(queue, msgs, o);
    };
    const drainer = startSpillDrainer({ db: t.db, broker: recording, logger: silentLogger, pollMs: 3_600_000, maxBatchBytes: 2 * MiB });
    onCleanup(() => drainer.stop());
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM inbound_events')) === 0, 'the spill table drained', 30_000);
    // Rows that start below 2 MiB: two of 1.5 MiB, two, then the last.
    expect(sends.map((s) => s.bytes)).toEqual([3 * MiB, 3 * MiB, 1.5 * MiB]);
    expect(sends.flatMap((s) => s.ids)).toEqual(ids);
    await waitFor(async () => (await t.broker.stats([Queues.inboundRaw]))[0]?.depth === 5, 'the five webhooks in the raw queue');
  }, 60_000);
});
