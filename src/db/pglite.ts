import { mkdirSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import type { Database, Queryable, QueryResult, Row } from './database.ts';
import { withDeadline } from '../deadline.ts';

/**
 * The embedded database: real PostgreSQL compiled to WASM, in this process. `dataDir` undefined
 * means in memory (tests). PGlite is a single connection; it serialises queries and holds other
 * callers while a transaction runs, so code must never query `db` from inside a transaction.
 */
export async function openPglite(dataDir?: string): Promise<Database> {
  if (dataDir) mkdirSync(dataDir, { recursive: true });
  const pg = await PGlite.create(dataDir);
  return wrapPglite(pg);
}

function toResult<T extends Row>(r: { rows: unknown[]; affectedRows?: number }): QueryResult<T> {
  return { rows: r.rows as T[], rowCount: Math.max(r.rows.length, r.affectedRows ?? 0) };
}

export function wrapPglite(pg: PGlite): Database {
  let closed = false;
  return {
    kind: 'pglite',
    async query<T extends Row>(sql: string, params?: readonly unknown[]) {
      return toResult<T>(await pg.query(sql, params as unknown[]));
    },
    async exec(sql: string) {
      await pg.exec(sql);
    },
    async transaction<T>(fn: (tx: Queryable) => Promise<T>, setup?: string): Promise<T> {
      return pg.transaction(async (t) => {
        if (setup) await t.exec(setup);
        const tx: Queryable = {
          async query<R extends Row>(sql: string, params?: readonly unknown[]) {
            return toResult<R>(await t.query(sql, params as unknown[]));
          },
          async exec(sql: string) {
            await t.exec(sql);
          },
        };
        return fn(tx);
      }) as Promise<T>;
    },
    async listen(channel, onNotify) {
      const unsub = await pg.listen(channel, onNotify);
      return async () => {
        if (!closed) await unsub();
      };
    },
    async ping(timeoutMs = 2000) {
      if (closed) throw new Error('database is closed');
      await withDeadline(pg.query('SELECT 1'), timeoutMs, 'database did not answer');
    },
    async close() {
      if (closed) return;
      closed = true;
      await pg.close();
    },
  };
}
