// A delivery admitted to its endpoint but not to its project (the project has its half of the
// request slots out) is postponed; when that postponement fails (the database away for a moment),
// the endpoint's slot must go back. Kept, it was never released: with one slot per endpoint here,
// that endpoint never sent again from this dispatcher.
import { describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { contactUpdated, emit, makeTenant, startWorld, subscribe } from './webhook-harness.ts';

/** The database, refusing the dispatcher's postponements while `refuse` is set (counted). */
function refusingPostponements(db: Database) {
  const state = { refuse: false, refused: 0 };
  const view = Object.create(db) as Database;
  view.query = ((sql: string, params?: readonly unknown[]) => {
    if (state.refuse && /AS p\(id, until, circuit\)/.test(sql)) {
      state.refused++;
      return Promise.reject(new Error('connection terminated unexpectedly'));
    }
    return db.query(sql, params);
  }) as Database['query'];
  return { db: view, state };
}

describe("a postponement at the project's cap that fails", () => {
  it("gives the endpoint's slot back: the endpoint sends once its project has room", async () => {
    // 4 request slots: 1 per endpoint, 2 per project.
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '4' }, worker: { parts: { fanout: true, scheduler: true, dispatcher: false } } });
    const link = refusingPostponements(w.db);
    await w.startWorker({ db: link.db, parts: { dispatcher: true, fanout: false, scheduler: false } });
    const a = await makeTenant(w);
    let hang = true;
    const slow = await Promise.all([0, 1].map(() => startReceiver(() => (hang ? 'hang' : 200))));
    for (const rx of slow) await subscribe(w, a, { url: rx.url, events: ['contact.created'], timeout_seconds: 30 });
    const fine = await startReceiver();
    await subscribe(w, a, { url: fine.url, events: ['contact.updated'] });

    await emit(w, a.projectId, 1); // one delivery to each slow endpoint: the project's two slots
    await waitFor(() => slow.every((rx) => rx.hanging() === 1), 'both slow endpoints holding a request');
    link.state.refuse = true;
    const [event] = await emit(w, a.projectId, 1, contactUpdated);
    await waitFor(() => link.state.refused > 0, 'a postponement refused', 20_000);
    link.state.refuse = false;

    // The project gets room; the fine endpoint's delivery goes.
    hang = false;
    for (const rx of slow) await rx.close();
    await waitFor(() => fine.requests.length === 1, "the fine endpoint's delivery", 20_000);
    expect(fine.requests[0].headers['webhook-id']).toBe(event.id);
  }, 60_000);
});
