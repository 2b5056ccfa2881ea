// The shape every retention prune shares: delete up to `limit` rows whose time column is older
// than `olderThanDays`, oldest first, skipping rows another process holds (housekeeping calls it
// chunk after chunk, in several workers at once). Table and column names are the callers'
// constants, never input.
import type { Queryable } from './database.ts';

export type PruneTarget = {
  table: string;
  /** The row's key columns. */
  key: readonly string[];
  /** The time the retention counts from. */
  at: string;
  /** More that a row must meet to go (SQL over the table's columns). */
  where?: string;
};

export async function pruneOlderThan(q: Queryable, t: PruneTarget, olderThanDays: number, limit: number): Promise<number> {
  const key = t.key.join(', ');
  const r = await q.query(
    `DELETE FROM ${t.table} WHERE (${key}) IN (
       SELECT ${key} FROM ${t.table}
       WHERE ${t.where ? `${t.where} AND ` : ''}${t.at} < now() - make_interval(secs => $1::float8 * 86400)
       ORDER BY ${t.at}
       LIMIT $2
       FOR UPDATE SKIP LOCKED)`,
    [olderThanDays, limit],
  );
  return r.rowCount;
}
