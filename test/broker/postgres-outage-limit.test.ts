// The Postgres-backed queue hands a message back, no attempt spent, when its handler cannot reach
// the database — for at most an hour from its first such round (architecture.md §6), as the
// RabbitMQ consumer does with x-outage-since: a message whose own query brings the server down
// looks the same, and must end as a dead letter, not go round for ever. Before the limit existed,
// the rounds here went on without end.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { listDeadLetters } from '../../src/broker/dead-letters.sql.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { isDatabaseUnavailable } from '../../src/db/unavailable.ts';
import { makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, onServices, uniqueName, waitFor } from '../support/env.ts';

/** A local port with nothing listening (taken, then closed). */
async function closedPort(): Promise<number> {
  return new Promise<number>((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

const HOUR_AGO_PLUS = 61 * 60_000;

type Source = { label: string; services: boolean; fail: (ctx: { nowhere: ReturnType<typeof connectPostgres>; url?: string }) => Promise<void> };

const sources: Source[] = [
  {
    // The handler needs a database that refuses connections (the real PostgreSQL adapter marks it).
    label: 'a refused connection',
    services: false,
    fail: async ({ nowhere }) => {
      await nowhere.query('SELECT 1');
    },
  },
  {
    // The message's own statement gets its backend terminated (57P01, as a watchdog that kills
    // runaway queries would): the server is up all along, and the broker's writes succeed.
    label: 'its own backend terminated (57P01)',
    services: true,
    fail: async ({ url }) => {
      const own = connectPostgres({ url: url!, max: 1, idleTimeoutMs: 1000 });
      try {
        await own.query('SELECT pg_terminate_backend(pg_backend_pid())');
      } finally {
        await own.close().catch(() => {});
      }
    },
  },
];

describe('Postgres-backed queue, database-outage hand-backs', () => {
  it('remembers the first round, keeps it through a retry, and spends no attempt within the hour', async () => {
    const { db } = await makeTestDb();
    const b = await makeTestBroker('postgres', db, { retryDelaysMs: [20, 40], pollMs: 50 });
    const q = uniqueName('q');
    await b.declareQueues([{ name: q }]);
    const nowhere = connectPostgres({ url: `postgres://postgres@127.0.0.1:${await closedPort()}/postgres`, max: 2 });
    onCleanup(() => nowhere.close());
    await b.send(q, [{ messageId: 'short-out', body: Buffer.from('{}') }]);

    const row = async () => (await db.query<{ since: Date | null }>('SELECT outage_since AS since FROM queue_messages WHERE queue = $1', [q])).rows[0];
    const seen: number[] = [];
    // outage_since as each run found it (the row exists while its handler runs).
    const since: Array<number | null> = [];
    let runs = 0;
    const consumer = await b.consume(q, async (d) => {
      seen.push(d.attempt);
      since.push((await row())?.since?.getTime() ?? null);
      runs++;
      if (runs === 1) await nowhere.query('SELECT 1'); // the database away: handed back (40 ms here)
      if (runs === 2) throw new Error('its own failure'); // a retry: the first round stays remembered
    });
    onCleanup(() => consumer.stop(2000));
    await waitFor(async () => runs >= 3 && (await row()) === undefined, 'the retry to succeed and be acked', 30_000);
    expect(seen).toEqual([1, 1, 2]);
    expect(since[0]).toBeNull();
    expect(since[1]).toEqual(expect.any(Number));
    expect(since[2]).toBe(since[1]);
  }, 60_000);


  for (const source of sources) {
    it.runIf(!source.services || onServices)(
      `counts the failures of a message over an hour into its outage rounds (${source.label}), as RabbitMQ does`,
      async () => {
        const { db, url } = await makeTestDb();
        const b = await makeTestBroker('postgres', db, { retryDelaysMs: [20, 40], pollMs: 50 });
        const q = uniqueName('q');
        await b.declareQueues([{ name: q }]);
        const nowhere = connectPostgres({ url: `postgres://postgres@127.0.0.1:${await closedPort()}/postgres`, max: 2 });
        onCleanup(() => nowhere.close());

        await b.send(q, [{ messageId: 'long-out', body: Buffer.from('{}') }]);
        // Its first round for an outage was 61 minutes ago.
        await db.query(`UPDATE queue_messages SET outage_since = now() - $2::int * interval '1 millisecond' WHERE queue = $1`, [q, HOUR_AGO_PLUS]);

        const seen: number[] = [];
        const marked: boolean[] = [];
        const consumer = await b.consume(q, async (d) => {
          seen.push(d.attempt);
          try {
            await source.fail({ nowhere, url });
          } catch (err) {
            marked.push(isDatabaseUnavailable(err));
            throw err;
          }
          throw new Error('the failure source did not fail');
        });
        onCleanup(() => consumer.stop(2000));

        const deadLetter = async () => (await listDeadLetters(db, { queue: q, limit: 5 })).items[0];
        // Three attempts ([20, 40]) and a dead letter is what should happen; ten handler runs
        // without one show the rounds go on.
        await waitFor(async () => (await deadLetter()) !== undefined || seen.length >= 10, 'a dead letter, or ten handler runs', 30_000);
        // The failures were classified as an outage by the real adapter (that is the path taken).
        expect(marked.length).toBeGreaterThan(0);
        expect(marked.every(Boolean)).toBe(true);
        expect(seen.slice(0, 4)).toEqual([1, 2, 3]);
        expect(await deadLetter()).toMatchObject({ messageId: 'long-out', attempts: 3 });
      },
      60_000,
    );
  }
});
