// A database whose listen() fails its first calls: a LISTEN connection that cannot be made yet,
// while queries work.
import type { Database } from '../../src/db/database.ts';
import { wrapDatabase } from './wrapped-db.ts';

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
    db: wrapDatabase(db, {
      listen: async (channel, cb, onResume) => {
        calls++;
        if (!allowed && calls <= failures) throw new Error(`listen refused (call ${calls})`);
        const unlisten = await db.listen(channel, cb, onResume);
        listening++;
        return unlisten;
      },
    }),
  };
}

