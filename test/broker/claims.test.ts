// The PostgreSQL queue's claim: a row whose lease ran out is free again — for any consumer but the
// one still running its handler (renewals can stall while it runs: a blocked event loop, a slow
// database). Claimed again by that consumer it would run twice at once, and the first run's
// outcome would no longer match its claim.
import { describe, expect, it } from 'vitest';
import { claimMessages, insertSent } from '../../src/broker/queue-messages.sql.ts';
import { makeTestDb, uniqueName } from '../support/env.ts';

const { db } = await makeTestDb();

describe('claiming from the PostgreSQL queue', () => {
  it('never gives a consumer back a row it is still running; another consumer may take it', async () => {
    const queue = uniqueName('q');
    await insertSent(db, queue, [{ messageId: 'm1', body: Buffer.from('{}'), headers: {} }]);
    const [first] = await claimMessages(db, { queue, limit: 10, leaseMs: 60_000, consumerId: 'a' });
    expect(first).toMatchObject({ messageId: 'm1', deliveries: 1 });
    // The lease runs out while a's handler still runs (its renewals stalled).
    await db.query(`UPDATE queue_messages SET locked_until = now() - interval '1 millisecond' WHERE id = $1::bigint`, [first.id]);

    expect(await claimMessages(db, { queue, limit: 10, leaseMs: 60_000, consumerId: 'a', running: [first.id] })).toEqual([]);
    const [taken] = await claimMessages(db, { queue, limit: 10, leaseMs: 60_000, consumerId: 'b' });
    expect(taken).toMatchObject({ id: first.id, deliveries: 2 });
  });

  it('gives a consumer back its own expired row once its handler is no longer running', async () => {
    const queue = uniqueName('q');
    await insertSent(db, queue, [{ messageId: 'm2', body: Buffer.from('{}'), headers: {} }]);
    const [first] = await claimMessages(db, { queue, limit: 10, leaseMs: 60_000, consumerId: 'a' });
    await db.query(`UPDATE queue_messages SET locked_until = now() - interval '1 millisecond' WHERE id = $1::bigint`, [first.id]);
    // Its handler ended without settling (the database refused the outcome): the row is due again.
    const [again] = await claimMessages(db, { queue, limit: 10, leaseMs: 60_000, consumerId: 'a', running: [] });
    expect(again).toMatchObject({ id: first.id, deliveries: 2 });
  });
});
