// A view of a database that counts what is asked of it, for tests that assert work was not done
// (no transaction opened, no query made). Everything else goes to the real database.
import type { Database } from '../../src/db/database.ts';

export function countingDb(db: Database): { db: Database; counts: { transactions: number; queries: number } } {
  const counts = { transactions: 0, queries: 0 };
  const view = Object.create(db) as Database;
  view.transaction = (fn, setup) => (counts.transactions++, db.transaction(fn, setup));
  view.query = (sql, params) => (counts.queries++, db.query(sql, params));
  return { db: view, counts };
}
