// A Database that forwards every call to `db`, except those given: for tests that make one part
// fail, hang or be counted while the rest stays real.
import type { Database } from '../../src/db/database.ts';

export function wrapDatabase(db: Database, over: Partial<Omit<Database, 'kind'>>): Database {
  return {
    kind: db.kind,
    query: over.query ?? ((sql, params) => db.query(sql, params)),
    exec: over.exec ?? ((sql) => db.exec(sql)),
    transaction: over.transaction ?? ((fn, setup) => db.transaction(fn, setup)),
    listen: over.listen ?? ((channel, cb, onResume) => db.listen(channel, cb, onResume)),
    ping: over.ping ?? ((ms) => db.ping(ms)),
    close: over.close ?? (() => db.close()),
    ...(db.poolStats ? { poolStats: () => db.poolStats!() } : {}),
  };
}
