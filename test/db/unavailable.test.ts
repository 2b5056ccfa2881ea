// Which database errors say "the server is not there" (no fault of the work that ran into them),
// and that only the adapter's own calls are judged: an error a transaction's code raises itself,
// such as a refused HTTP connection, is that code's failure.
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { connectPostgres } from '../../src/db/postgres.ts';
import { isDatabaseUnavailable, markUnavailable } from '../../src/db/unavailable.ts';
import { makeTestDb, onCleanup, onServices, waitFor } from '../support/env.ts';

const withCode = (code: string, message = 'x') => Object.assign(new Error(message), { code });

describe('markUnavailable', () => {
  it.each([
    ['a refused connection', withCode('ECONNREFUSED')],
    ['a reset connection', withCode('ECONNRESET')],
    ['a server shutting down (57P01)', withCode('57P01')],
    ['a server starting up (57P03)', withCode('57P03')],
    ['too many connections (53300)', withCode('53300')],
    ['a connection exception (08006)', withCode('08006')],
    ['a standby after a failover (25006)', withCode('25006')],
    ['a connection pg saw end', new Error('Connection terminated unexpectedly')],
    ['a pool that could not connect in time', new Error('timeout exceeded when trying to connect')],
  ])('marks %s', (_label, err) => {
    expect(isDatabaseUnavailable(markUnavailable(err))).toBe(true);
  });

  it.each([
    ['a syntax error (42601)', withCode('42601')],
    ['a unique violation (23505)', withCode('23505')],
    ['a serialization failure (40001)', withCode('40001')],
    ['a protocol violation (08P01), which a statement can cause', withCode('08P01')],
    ['out of memory (53200), which a statement can cause', withCode('53200')],
    ['an error without a code', new Error('boom')],
    ['something that is not an Error', 'ECONNREFUSED'],
  ])('leaves %s unmarked', (_label, err) => {
    expect(isDatabaseUnavailable(markUnavailable(err))).toBe(false);
  });

  it('is found through a cause, and never on an error nobody marked', () => {
    const marked = markUnavailable(withCode('ECONNREFUSED'));
    expect(isDatabaseUnavailable(new Error('batch failed', { cause: marked }))).toBe(true);
    expect(isDatabaseUnavailable(withCode('ECONNREFUSED'))).toBe(false);
  });
});

describe.runIf(onServices)('the PostgreSQL adapter', () => {
  it("marks a server it cannot reach, not a statement's own failure, nor an error the transaction's code throws", async () => {
    // A port with nothing behind it: take one, then close it.
    const free = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const { port } = s.address() as net.AddressInfo;
        s.close(() => resolve(port));
      });
    });
    const nowhere = connectPostgres({ url: `postgres://postgres@127.0.0.1:${free}/postgres` });
    onCleanup(() => nowhere.close());
    const refused = await nowhere.query('SELECT 1').then(() => undefined, (e: unknown) => e);
    expect(isDatabaseUnavailable(refused)).toBe(true);
    const noTx = await nowhere.transaction(async () => 1).then(() => undefined, (e: unknown) => e);
    expect(isDatabaseUnavailable(noTx)).toBe(true);

    const { db } = await makeTestDb();
    const syntax = await db.query('SELEC 1').then(() => undefined, (e: unknown) => e);
    expect(syntax).toBeInstanceOf(Error);
    expect(isDatabaseUnavailable(syntax)).toBe(false);
    const own = await db
      .transaction(async (tx) => {
        await tx.query('SELECT 1');
        throw withCode('ECONNREFUSED', 'connect ECONNREFUSED 10.0.0.1:443');
      })
      .then(() => undefined, (e: unknown) => e);
    expect((own as { code?: string }).code).toBe('ECONNREFUSED');
    expect(isDatabaseUnavailable(own)).toBe(false);
  });

  it('lives through the server ending a transaction between two statements, and marks the next one', async () => {
    // What a fast shutdown, a restart or a failover sends every session (57P01). Before, the
    // checked-out connection emitted 'error' with nobody listening, and the process ended (here
    // the test run would report an uncaught exception).
    const { db } = await makeTestDb();
    const failed = await db
      .transaction(async (tx) => {
        const { rows } = await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid');
        await db.query('SELECT pg_terminate_backend($1)', [rows[0].pid]);
        await waitFor(async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE pid = $1', [rows[0].pid])).rows[0].n === 0, 'the backend to end');
        // The FATAL was written before the backend ended: let this process read it first.
        await new Promise((r) => setImmediate(r));
        await new Promise((r) => setImmediate(r));
        await tx.query('SELECT 2');
      })
      .then(() => undefined, (e: unknown) => e);
    expect(failed).toBeInstanceOf(Error);
    expect(isDatabaseUnavailable(failed)).toBe(true);
    // The pool goes on with a fresh connection.
    expect((await db.query<{ n: number }>('SELECT 1 AS n')).rows).toEqual([{ n: 1 }]);
    expect(await db.transaction(async (tx) => (await tx.query<{ n: number }>('SELECT 3 AS n')).rows[0].n)).toBe(3);
  });
});
