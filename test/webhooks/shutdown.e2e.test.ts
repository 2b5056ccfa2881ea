// A dispatcher stopping while an attempt is still out: it waits SHUTDOWN_TIMEOUT_MS, then cuts
// the attempt off — which is our doing, not the endpoint's: no failed attempt is recorded, the
// claimed row waits for its lease and then comes back as `interrupted`, due again at once.
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { api, deliveriesOf, emit, endLease, makeTenant, startWorld, subscribe, waitForDeliveries, type World } from './webhook-harness.ts';

async function attemptRows(w: World, deliveryId: string): Promise<Array<{ n: number; error_class: string }>> {
  return (await w.db.query<{ n: number; error_class: string }>(`SELECT n, error_class FROM webhook_attempts WHERE delivery_id = $1 ORDER BY n`, [deliveryId])).rows;
}

describe('an attempt cut off at shutdown', () => {
  it('is not recorded as a failed attempt: its row waits for its lease, then is retried at once as interrupted', async () => {
    const w = await startWorld({ worker: { stopAttemptsMs: 200 } });
    const t = await makeTenant(w);
    const rx = await startReceiver((r) => (r.n === 1 ? 'hang' : 200));
    const s = await subscribe(w, t, { url: rx.url, timeout_seconds: 60 });
    await emit(w, t.projectId, 1);
    await waitFor(() => rx.hanging() === 1, 'the attempt hanging at the endpoint');
    await w.stopWorker();
    // Cut off for real: its connection is gone (before: it went on to its 60 s timeout).
    await waitFor(() => rx.requests[0].closedAt !== undefined, 'the cut-off request closed at the endpoint', 5_000);
    const [d] = await deliveriesOf(w, s.id);
    expect([d.status, d.attempts]).toEqual(['sending', 1]);
    expect(await attemptRows(w, d.id)).toEqual([]);

    // A new worker (the restart) takes the delivery back once its lease has passed.
    await w.startWorker();
    await endLease(w, d.id);
    await waitForDeliveries(w, s.id, 1, 'succeeded');
    const detail = (await api(w, t, 'GET', `/webhook-deliveries/${d.id}`)).json;
    expect(detail.attempts.map((x: any) => [x.n, x.status_code, x.error_class])).toEqual([
      [1, null, 'interrupted'],
      [2, 200, 'success'],
    ]);
    expect(rx.requests).toHaveLength(2);
    const sub = await waitFor(async () => {
      const r = (await api(w, t, 'GET', `/webhook-subscriptions/${s.id}`)).json;
      return r.success_count === 1 ? r : undefined;
    }, 'health counters flushed');
    expect(sub).toMatchObject({ failure_count: 0, failing_since: null });
  }, 60_000);

  it('is cut off after SHUTDOWN_TIMEOUT_MS, not a fixed 10 s, and nothing of it is recorded once stop() returns', async () => {
    const w = await startWorld({ env: { SHUTDOWN_TIMEOUT_MS: '300' } });
    const t = await makeTenant(w);
    const rx = await startReceiver(() => 'hang');
    const s = await subscribe(w, t, { url: rx.url, timeout_seconds: 60 });
    await emit(w, t.projectId, 1);
    await waitFor(() => rx.hanging() === 1, 'the attempt hanging at the endpoint');
    const started = Date.now();
    await w.stopWorker();
    expect(Date.now() - started).toBeLessThan(5_000); // about 300 ms; before: 10 s and 1 s of grace
    await waitFor(() => rx.requests[0].closedAt !== undefined, 'the cut-off request closed at the endpoint', 5_000);
    const [d] = await deliveriesOf(w, s.id);
    expect([d.status, d.attempts]).toEqual(['sending', 1]);
    expect(await attemptRows(w, d.id)).toEqual([]);
  }, 60_000);
});
