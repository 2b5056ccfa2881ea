// A database whose listen() fails its first calls: a LISTEN connection that cannot be made yet,
// while queries work.
import type { Database } from '../../src/db/database.ts';

/**
 * `db` whose listen() fails its first `failures` calls, or until allow(); counts the calls, and
 * those that listen.
 */
export function failingListen(db: Database, failures: number): { db: Database; calls: () => number; listening: () => number; allow(): void } {
  let calls = 0;
  let listening = 0;
  let allowed = false;
  return {
    calls: () => calls,
    listening: () => listening,
    allow: () => void (allowed = true),
    db: {
      kind: db.kind,
      query: (sql, params) => db.query(sql, params),
      exec: (sql) => db.exec(sql),
      transaction: (fn, setup) => db.transaction(fn, setup),
      ping: (ms) => db.ping(ms),
      close: () => db.close(),
      listen: async (channel, cb) => {
        calls++;
        if (!allowed && calls <= failures) throw new Error(`listen refused (call ${calls})`);
        const unlisten = await db.listen(channel, cb);
        listening++;
        return unlisten;
      },
    },
  };
}

