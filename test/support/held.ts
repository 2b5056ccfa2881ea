// Holding a transaction open at a gate, to force an interleaving of two transactions: one holds
// its locks at the gate while the test starts the other and waits until it is blocked on them.
// Each gated transaction reports its backend pid (pg_backend_pid()), so the waits look at that
// backend alone, never at database-wide states another connection could also be in.
//
// PostgreSQL only (the tests using it run only onServices): PGlite's one connection takes
// transactions in turn, so a transaction held there blocks everything, and pg_backend_pid() /
// pg_blocking_pids() mean nothing. The functions here refuse a PGlite database.
import pg from 'pg';
import type { Database, Queryable, QueryResult, Row } from '../../src/db/database.ts';
import { onTestFinished } from 'vitest';
import { onCleanup, waitFor } from './env.ts';

/**
 * Where a gated transaction waits: `before` its work (begun, its now() fixed),
 * `after` it (its work done and its locks held, not committed), or right after the first of its
 * queries whose SQL `when` accepts (with the locks that query took).
 */
export type GateAt = 'before' | 'after' | ((sql: string) => boolean);

export type Gate = {
  /** Resolves with the backend pid of the first transaction to reach the gate; rejects if it fails first. */
  reached: Promise<number>;
  /** Opens the gate: every transaction waiting there (and any reaching it later) goes on. */
  release(): void;
};

function postgresOnly(db: Database): void {
  if (db.kind !== 'postgres') throw new Error(`test/support/held.ts needs PostgreSQL, not ${db.kind}`);
}

function makeGate(): Gate & { gate: Promise<void>; reach(pid: number): void; fail(err: unknown): void } {
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let reach!: (pid: number) => void;
  let fail!: (err: unknown) => void;
  const reached = new Promise<number>((resolve, reject) => ((reach = resolve), (fail = reject)));
  reached.catch(() => undefined); // the failure is the transaction's too: reported where that is awaited
  // A test that fails while a transaction waits here must not leave it open, holding its locks for
  // the tests after it (and the pool's close): released when the test ends, or with the file's
  // cleanups when made outside a test.
  try {
    onTestFinished(() => release());
  } catch {
    onCleanup(async () => release());
  }
  return { gate, reached, release, reach, fail };
}

async function backendPid(tx: Queryable): Promise<number> {
  return Number((await tx.query<{ pid: number }>('SELECT pg_backend_pid() AS pid')).rows[0].pid);
}

/**
 * A view of `real` whose transactions wait at a gate (see GateAt; `after` by default) until
 * `release()`. Everything else goes to `real` unchanged.
 */
export function gatedDatabase(real: Database, when: GateAt = 'after'): Gate & { db: Database } {
  postgresOnly(real);
  const g = makeGate();
  const db = Object.create(real) as Database;
  db.transaction = (fn, setup) => real.transaction(async (tx) => {
    let reachedHere = false;
    try {
      const pid = await backendPid(tx);
      const stop = async () => {
        reachedHere = true;
        g.reach(pid);
        await g.gate;
      };
      if (when === 'before') {
        await stop();
        return await fn(tx);
      }
      if (when === 'after') {
        const r = await fn(tx);
        await stop();
        return r;
      }
      const q = Object.create(tx) as Queryable;
      q.query = async <T extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>> => {
        const r = await tx.query<T>(sql, params);
        if (!reachedHere && when(sql)) await stop();
        return r;
      };
      const r = await fn(q);
      // A gate no query matched (the SQL changed): say so, rather than leave the test waiting.
      if (!reachedHere) g.fail(new Error('the gated transaction ended without reaching its gate: no query matched'));
      return r;
    } catch (err) {
      if (!reachedHere) g.fail(err);
      throw err;
    }
  }, setup);
  return { db, reached: g.reached, release: g.release };
}

/**
 * Runs `fn` in a transaction of `real` that, once `fn` is done, waits at a gate to commit.
 * `pid` resolves with its backend pid when it waits there; `done` when it has committed.
 */
export function holdTransaction(real: Database, fn: (tx: Queryable) => Promise<unknown>): { pid: Promise<number>; release(): void; done: Promise<void> } {
  const held = gatedDatabase(real, 'after');
  const done = held.db.transaction(async (tx) => {
    await fn(tx);
  });
  return { pid: held.reached, release: held.release, done };
}

/** Waits until some backend is waiting on a lock the backend `pid` holds (pg_blocking_pids). */
export async function waitUntilBlockedBy(db: Database, pid: number, what: string): Promise<void> {
  postgresOnly(db);
  await waitFor(async () => (await db.query('SELECT 1 FROM pg_stat_activity WHERE $1 = ANY(pg_blocking_pids(pid))', [pid])).rows.length > 0, what);
}

/**
 * A pool with nothing to give: `n` queries of `db` (its pool's size) wait on a lock of `contacts`
 * that another connection to `url` holds, until `release()` commits it. `held` are those queries
 * (each counts the contacts once let through).
 */
export async function poolWaitingOnLock(db: Database, url: string, n: number): Promise<{ held: Array<Promise<QueryResult<{ n: number }>>>; release(): Promise<void> }> {
  postgresOnly(db);
  const locker = new pg.Client({ connectionString: url });
  const observer = new pg.Client({ connectionString: url }); // outside the lock's transaction, whose view of pg_stat_activity is fixed
  await Promise.all([locker.connect(), observer.connect()]);
  onCleanup(() => locker.end());
  onCleanup(() => observer.end());
  await locker.query('BEGIN');
  await locker.query('LOCK TABLE contacts IN ACCESS EXCLUSIVE MODE');
  const held = Array.from({ length: n }, () => db.query<{ n: number }>('SELECT count(*)::int AS n FROM contacts'));
  await waitFor(async () => {
    const r = await observer.query(`SELECT count(*)::int AS n FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND datname = current_database()`);
    return r.rows[0].n === n;
  }, 'every pooled connection waiting on the lock');
  return { held, release: async () => void (await locker.query('COMMIT')) };
}
