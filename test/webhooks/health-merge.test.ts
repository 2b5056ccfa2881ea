// Endpoint health flushed by several dispatchers, out of order: the counts add up, the times
// merge, and the last status and error are those of the newest outcome, not of the last flush.
import { describe, expect, it } from 'vitest';
import { addHealth } from '../../src/db/webhook-subscriptions.sql.ts';
import { makeTenant, startWorld, subscribe } from './webhook-harness.ts';

describe('endpoint health merged from several dispatchers', () => {
  it('keeps the newest outcome when an older one is flushed after it', async () => {
    const w = await startWorld();
    const t = await makeTenant(w);
    const s = await subscribe(w, t, { url: 'http://127.0.0.1:9/never' });
    const at = (sec: number) => new Date(Date.UTC(2026, 11, 5, 12, 0, sec));
    const none = { successes: 0, failures: 0, lastSuccessAt: null, lastFailureAt: null, firstFailureAt: null, lastStatusCode: null, lastError: null };
    // Dispatcher B: a 500 at :12. Then dispatcher A, late: a 200 at :10.
    await addHealth(w.db, [{ ...none, subscriptionId: s.id, failures: 1, lastFailureAt: at(12), firstFailureAt: at(12), lastStatusCode: 500, lastError: 'HTTP 500' }]);
    await addHealth(w.db, [{ ...none, subscriptionId: s.id, successes: 1, lastSuccessAt: at(10), lastStatusCode: 200 }]);
    const row = (await w.db.query('SELECT success_count, failure_count, last_status_code, last_error, failing_since FROM webhook_subscriptions WHERE id = $1', [s.id])).rows[0];
    expect(row).toMatchObject({ success_count: 1, failure_count: 1, last_status_code: 500, last_error: 'HTTP 500' });
    expect(new Date(row.failing_since).toISOString()).toBe(at(12).toISOString());
    // A newer success then clears them.
    await addHealth(w.db, [{ ...none, subscriptionId: s.id, successes: 1, lastSuccessAt: at(20), lastStatusCode: 200 }]);
    expect((await w.db.query('SELECT last_status_code, last_error, failing_since FROM webhook_subscriptions WHERE id = $1', [s.id])).rows[0]).toEqual({ last_status_code: 200, last_error: null, failing_since: null });
  });
});
