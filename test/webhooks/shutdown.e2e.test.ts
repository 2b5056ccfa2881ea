// A dispatcher stopping while an attempt is still out: it waits SHUTDOWN_TIMEOUT_MS, then cuts
// the attempt off — which is our doing, not the endpoint's: no attempt is recorded or spent, the
// claim is given back and the delivery is due again at once (on its last attempt too).
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { api, deliveriesOf, emit, makeTenant, startWorld, subscribe, waitForDeliveries, type World } from './webhook-harness.ts';

async function attemptRows(w: World, deliveryId: string): Promise<Array<{ n: number; error_class: string }>> {
  return (await w.db.query<{ n: number; error_class: string }>(`SELECT n, error_class FROM webhook_attempts WHERE delivery_id = $1 ORDER BY n`, [deliveryId])).rows;
}

describe('an attempt cut off at shutdown', () => {
  it('is not recorded and spends no attempt: the delivery is due again at once, and the next worker sends it', async () => {
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
    expect([d.status, d.attempts]).toEqual(['pending', 0]);
    expect(await attemptRows(w, d.id)).toEqual([]);

    // A new worker (the restart) sends it, as its first attempt.
    await w.startWorker();
    await waitForDeliveries(w, s.id, 1, 'succeeded');
    const detail = (await api(w, t, 'GET', `/webhook-deliveries/${d.id}`)).json;
    expect(detail.attempts.map((x: any) => [x.n, x.status_code, x.error_class])).toEqual([[1, 200, 'success']]);
    expect(rx.requests).toHaveLength(2);
    const sub = await waitFor(async () => {
      const r = (await api(w, t, 'GET', `/webhook-subscriptions/${s.id}`)).json;
      return r.success_count === 1 ? r : undefined;
    }, 'health counters flushed');
    expect(sub).toMatchObject({ failure_count: 0, failing_since: null });
  }, 60_000);

  it('on a manual retry (its one attempt) leaves the delivery to be tried again, not dead', async () => {
    const w = await startWorld({ worker: { stopAttemptsMs: 200 } });
    const t = await makeTenant(w);
    let hang = false;
    const rx = await startReceiver(() => (hang ? 'hang' : 410)); // 410: dead at its first attempt
    const s = await subscribe(w, t, { url: rx.url, timeout_seconds: 60 });
    await emit(w, t.projectId, 1);
    const [dead] = await waitForDeliveries(w, s.id, 1, 'dead');
    hang = true;
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: true })).status).toBe(200); // 410 disabled it
    expect((await api(w, t, 'POST', `/webhook-deliveries/${dead.id}/retry`)).status).toBe(202);
    await waitFor(() => rx.hanging() === 1, 'the retry hanging at the endpoint');
    await w.stopWorker();
    const [d] = await deliveriesOf(w, s.id);
    expect(d.status).not.toBe('dead');
    expect(d.attempts).toBe(1); // the retry's attempt given back
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
    expect([d.status, d.attempts]).toEqual(['pending', 0]);
    expect(await attemptRows(w, d.id)).toEqual([]);
  }, 60_000);
});
