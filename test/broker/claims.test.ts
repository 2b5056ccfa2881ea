// The PostgreSQL queue's claim: a row whose lease ran out is free again — for any consumer but the
// one still running its handler (renewals can stall while it runs: a blocked event loop, a slow
// database). Claimed again by that consumer it would run twice at once, and the first run's
// outcome would no longer match its claim.
import { describe, expect, it } from 'vitest';
import { claimMessages, insertSent, nextDueMs } from '../../src/broker/queue-messages.sql.ts';
import type { Queryable } from '../../src/db/database.ts';
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

/** A row of a fresh queue: times in seconds from now; `lockedFor` null (or left out): no lease. */
type Row = { availableIn: number; lockedFor?: number | null; lockedBy?: string | null };

/**
 * Writes `rows` to a fresh queue and asks when its next message is due for `consumerId`, in one
 * transaction: one now() for the rows' times and the answer, so the milliseconds are exact.
 */
function dueWith<T>(rows: readonly Row[], ask: (tx: Queryable, queue: string) => Promise<T>): Promise<T> {
  return db.transaction(async (tx) => {
    const queue = uniqueName('q');
    await tx.query(
      `INSERT INTO queue_messages (queue, message_id, routing_key, body, available_at, locked_until, locked_by)
       SELECT $1, 'm' || n, $1, '\\x7b7d'::bytea, now() + make_interval(secs => a), now() + make_interval(secs => l), b
       FROM unnest($2::float8[], $3::float8[], $4::text[]) WITH ORDINALITY AS r(a, l, b, n)`,
      [queue, rows.map((r) => r.availableIn), rows.map((r) => r.lockedFor ?? null), rows.map((r) => r.lockedBy ?? null)],
    );
    return ask(tx, queue);
  });
}

const dueIn = (rows: readonly Row[], consumerId = 'me') => dueWith(rows, (tx, queue) => nextDueMs(tx, queue, consumerId));

describe('when the next message of the PostgreSQL queue comes due', () => {
  // Rows as the queue writes them: a lease (locked_until with its holder, or none: both are set and
  // cleared together) is taken only on a row that is due, and a retry or hand-back that moves
  // available_at drops the lease. A wait of 0 or less means "due now", however far back.
  it('is the earliest time a row could be claimed by this consumer: available, and its lease (if any) run out', async () => {
    expect(await dueIn([])).toBeNull();
    expect(await dueIn([{ availableIn: 60 }])).toBe(60_000);
    // Due already (a claim raced it): no wait.
    expect(await dueIn([{ availableIn: -10 }, { availableIn: 60 }])).toBeLessThanOrEqual(0);
    // Another consumer's lease runs out before the next retry comes due.
    expect(await dueIn([{ availableIn: -1, lockedFor: 30, lockedBy: 'other' }, { availableIn: 60 }])).toBe(30_000);
    // The next retry comes due before another consumer's lease runs out.
    expect(await dueIn([{ availableIn: -1, lockedFor: 30, lockedBy: 'other' }, { availableIn: 20 }])).toBe(20_000);
    // A lease that ran out: claimable now (its holder died).
    expect(await dueIn([{ availableIn: -20, lockedFor: -5, lockedBy: 'other' }, { availableIn: 60 }])).toBeLessThanOrEqual(0);
    // This consumer's own claims are not waited for (it hears when their handlers finish).
    expect(await dueIn([{ availableIn: -1, lockedFor: 5, lockedBy: 'me' }, { availableIn: 60 }])).toBe(60_000);
    expect(await dueIn([{ availableIn: -1, lockedFor: 5, lockedBy: 'me' }])).toBeNull();
    // A lease with no holder is anyone's.
    expect(await dueIn([{ availableIn: -1, lockedFor: 15 }, { availableIn: 60 }])).toBe(15_000);
    // Many waiting in retry behind leases: the earliest of all.
    const waiting = Array.from({ length: 100 }, (_, i) => ({ availableIn: 100 + i }));
    const leased = [40, 50, 70].map((s) => ({ availableIn: -2, lockedFor: s, lockedBy: 'other' }));
    expect(await dueIn([...waiting, ...leased, { availableIn: -3, lockedFor: 1, lockedBy: 'me' }])).toBe(40_000);
  });

  it('answers as the single min over every row did, on any mix of rows and consumers the queue writes', async () => {
    // The meaning, as first written: the min over every row not held by this consumer.
    const reference = (tx: Queryable, queue: string, consumerId: string) =>
      tx
        .query<{ ms: number | null }>(
          `SELECT ceil(extract(epoch FROM min(greatest(available_at, coalesce(locked_until, available_at))) - now()) * 1000)::int AS ms
           FROM queue_messages WHERE queue = $1 AND locked_by IS DISTINCT FROM $2`,
          [queue, consumerId],
        )
        .then((r) => r.rows[0]?.ms ?? null);
    // A fixed sequence (a linear congruential generator), so a failure can be replayed.
    let seed = 7;
    const next = (n: number) => ((seed = (seed * 1_103_515_245 + 12_345) % 2 ** 31), seed % n);
    const pick = <T>(xs: readonly T[]) => xs[next(xs.length)];
    const consumers = ['a', 'b', 'c'];
    for (let round = 0; round < 25; round++) {
      const rows: Row[] = Array.from({ length: 1 + next(30) }, () => {
        const leased = next(3) > 0;
        // A leased row was due when claimed.
        return leased
          ? { availableIn: -next(100), lockedFor: next(200) - 100, lockedBy: pick([...consumers, null]) }
          : { availableIn: next(200) - 100, lockedFor: null, lockedBy: null };
      });
      const answers = await dueWith(rows, async (tx, queue) => {
        const out: Array<[number | null, number | null]> = [];
        for (const c of consumers) out.push([await nextDueMs(tx, queue, c), await reference(tx, queue, c)]);
        return out;
      });
      for (const [got, want] of answers) {
        if (want !== null && want <= 0) expect(got, JSON.stringify(rows)).toBeLessThanOrEqual(0);
        else expect(got, JSON.stringify(rows)).toBe(want);
      }
    }
  });
});
