// In-process claims: on PGlite, what `FOR UPDATE SKIP LOCKED` does on PostgreSQL. PGlite can only
// be opened by one process, so every relay using it lives in this one; the rows a relay is
// publishing are kept in a set per database, and other relays' claims skip them. The claim itself
// (query + adding to the set) runs one at a time, so two relays cannot take the same row between
// the query and the bookkeeping. The state is keyed by the Database object: relays of one PGlite
// must be given the same object (the composition root has only one).
import type { Database } from '../db/database.ts';
import { claimUnpublished, type OutboxRow } from './outbox.sql.ts';

type State = { busy: Set<number>; chain: Promise<unknown> };
const states = new WeakMap<Database, State>();

export type InProcessClaims = {
  /** The oldest unpublished rows no relay of this process is publishing, now owned by the caller. */
  claim(limit: number): Promise<OutboxRow[]>;
  /** Gives rows back (published and marked, or failed and left for a later claim). */
  release(seqs: readonly number[]): void;
};

export function inProcessClaims(db: Database): InProcessClaims {
  let state = states.get(db);
  if (!state) states.set(db, (state = { busy: new Set(), chain: Promise.resolve() }));
  const s = state;
  return {
    claim(limit) {
      const run = s.chain.then(async () => {
        const rows = await claimUnpublished(db, limit, [...s.busy]);
        for (const r of rows) s.busy.add(r.seq);
        return rows;
      });
      s.chain = run.catch(() => {});
      return run;
    },
    release(seqs) {
      for (const seq of seqs) s.busy.delete(seq);
    },
  };
}
