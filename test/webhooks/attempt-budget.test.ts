// How many attempts a delivery gets, and when: a short Retry-After never hastens the schedule, and
// a manual retry is exactly one more attempt whatever the delivery went through before.
import { beforeAll, describe, expect, it } from 'vitest';
import { Queues } from '../../src/broker/topology.ts';
import { waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { api, deliveriesOf, emit, endLease, makeTenant, startWorld, subscribe, waitForDeliveries, type DeliveryRow, type TestTenant, type World } from './webhook-harness.ts';

async function deliveryOf(w: World, subscriptionId: string): Promise<DeliveryRow> {
  const rows = await deliveriesOf(w, subscriptionId);
  expect(rows).toHaveLength(1);
  return rows[0];
}

async function attemptLog(w: World, t: TestTenant, id: string): Promise<Array<[number, number | null, string]>> {
  const detail = (await api(w, t, 'GET', `/webhook-deliveries/${id}`)).json;
  return detail.attempts.map((x: any) => [x.n, x.status_code, x.error_class]);
}

describe('a short Retry-After on 429', () => {
  it("does not bring the next attempt before the schedule's step: '429 Retry-After: 1' waits the 3 s step", async () => {
    const w = await startWorld({ env: { WEBHOOK_RETRY_SCHEDULE: '3s,3s' } });
    const t = await makeTenant(w);
    const rx = await startReceiver(() => ({ status: 429, headers: { 'retry-after': '1' } }));
    const s = await subscribe(w, t, { url: rx.url });
    await emit(w, t.projectId);
    const d = await waitFor(async () => {
      const row = await deliveryOf(w, s.id);
      return row.status === 'retrying' && row.attempts === 1 ? row : undefined;
    }, 'the delivery waiting for its second attempt');
    expect(rx.requests).toHaveLength(1);
    // The step with its jitter (±20%): at least 2.4 s after the attempt. Before: 1 s (Retry-After).
    expect(d.next_attempt_at!.getTime() - rx.requests[0].at).toBeGreaterThanOrEqual(2400 - 50);
  });
});

describe('a manual retry', () => {
  let w: World;
  let t: TestTenant;
  beforeAll(async () => {
    w = await startWorld(); // schedule 200ms, 400ms: three attempts
    t = await makeTenant(w);
  }, 120_000);

  it('of a delivery waiting for its next attempt brings it forward and leaves it listed as retrying', async () => {
    const s = await subscribe(w, t, { url: 'http://127.0.0.1:9/never' });
    const { rows } = await w.db.query<{ id: string }>(
      `INSERT INTO webhook_deliveries (id, project_id, subscription_id, event_id, event_type, body, status, attempts, next_attempt_at)
       VALUES (gen_random_uuid(), $1, $2, gen_random_uuid(), 'contact.created', '{}', 'retrying', 2, now() + interval '1 hour') RETURNING id`,
      [t.projectId, s.id],
    );
    const r = await api(w, t, 'POST', `/webhook-deliveries/${rows[0].id}/retry`);
    expect(r.status).toBe(202);
    expect(r.json).toMatchObject({ status: 'retrying', attempts: 2 }); // before: pending, as if never tried
  });

  it('of a succeeded delivery is one more attempt: a 500 then makes it dead, not retried on the schedule', async () => {
    let status = 200;
    const rx = await startReceiver(() => status);
    const s = await subscribe(w, t, { url: rx.url });
    await emit(w, t.projectId);
    const [done] = await waitForDeliveries(w, s.id, 1, 'succeeded');
    status = 500;
    expect((await api(w, t, 'POST', `/webhook-deliveries/${done.id}/retry`)).status).toBe(202);
    const dead = await waitFor(async () => {
      const row = await deliveryOf(w, s.id);
      return row.status === 'dead' ? row : undefined;
    }, 'the replayed delivery dead');
    expect(dead.attempts).toBe(2); // before: 3, the replay ran the rest of the schedule
    expect(rx.requests).toHaveLength(2);
    expect(await attemptLog(w, t, done.id)).toEqual([
      [1, 200, 'success'],
      [2, 500, 'server_error'],
    ]);
  });

  it('of a delivery dead at its first attempt (410) is one more attempt; recover then gives the whole schedule again', async () => {
    let status = 410;
    const rx = await startReceiver(() => status);
    const s = await subscribe(w, t, { url: rx.url });
    const since = new Date(Date.now() - 1000).toISOString();
    await emit(w, t.projectId);
    const [gone] = await waitForDeliveries(w, s.id, 1, 'dead');
    expect(gone.attempts).toBe(1);
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: true })).status).toBe(200);

    status = 500;
    expect((await api(w, t, 'POST', `/webhook-deliveries/${gone.id}/retry`)).status).toBe(202);
    const dead = await waitFor(async () => {
      const row = await deliveryOf(w, s.id);
      return row.status === 'dead' && row.attempts > 1 ? row : undefined;
    }, 'the retried delivery dead again');
    expect(dead.attempts).toBe(2); // before: 3
    expect(rx.requests).toHaveLength(2);

    // recover (contract §2): each with the whole retry schedule again — three more attempts.
    expect((await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/recover`, { since })).json).toEqual({ recovered: 1 });
    const again = await waitFor(async () => {
      const row = await deliveryOf(w, s.id);
      return row.status === 'dead' && row.attempts > 2 ? row : undefined;
    }, 'the recovered delivery dead after its schedule');
    expect(again.attempts).toBe(5);
    expect((await attemptLog(w, t, gone.id)).map(([n, code]) => [n, code])).toEqual([
      [1, 410],
      [2, 500],
      [3, 500],
      [4, 500],
      [5, 500],
    ]);
  });

  it('whose one attempt is interrupted (its lease ran out) leaves the delivery dead, not retrying', async () => {
    let answer: 200 | 'hang' = 200;
    const rx = await startReceiver(() => answer);
    const s = await subscribe(w, t, { url: rx.url, timeout_seconds: 30 });
    await emit(w, t.projectId);
    const [done] = await waitForDeliveries(w, s.id, 1, 'succeeded');
    answer = 'hang';
    expect((await api(w, t, 'POST', `/webhook-deliveries/${done.id}/retry`)).status).toBe(202);
    await waitFor(() => rx.hanging() === 1, 'the manual attempt hanging at the endpoint');
    await endLease(w, done.id); // as if its dispatcher had died: the scheduler takes it back
    const taken = await waitFor(async () => {
      const row = await deliveryOf(w, s.id);
      return row.status !== 'sending' || row.attempts !== 2 ? row : undefined;
    }, 'the delivery taken back from its lost attempt');
    expect([taken.status, taken.attempts]).toEqual(['dead', 2]); // before: retrying, and sent again
    expect(rx.requests).toHaveLength(2);
  });
});

describe('a recover', () => {
  it('answers at once and leaves the sending to the scheduler: nothing is put on a queue by the request', async () => {
    const w = await startWorld();
    const t = await makeTenant(w);
    let up = false;
    const rx = await startReceiver(() => (up ? 200 : 500));
    const s = await subscribe(w, t, { url: rx.url, max_attempts: 1 });
    const since = new Date(Date.now() - 1000).toISOString();
    await emit(w, t.projectId, 3);
    await waitForDeliveries(w, s.id, 3, 'dead');
    await w.stopWorker();
    const depth = async () => (await w.broker.stats([Queues.webhooksOutbound, Queues.webhooksDue])).reduce((n, q) => n + q.depth, 0);
    expect(await depth()).toBe(0);

    expect((await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/recover`, { since })).json).toEqual({ recovered: 3 });
    expect(await depth()).toBe(0); // before: the request sent all three to webhooks.due itself
    const rows = await w.db.query<{ status: string; enqueued_at: Date | null }>('SELECT status, enqueued_at FROM webhook_deliveries WHERE subscription_id = $1', [s.id]);
    expect(rows.rows.map((d) => [d.status, d.enqueued_at])).toEqual([['pending', null], ['pending', null], ['pending', null]]);

    up = true;
    await w.startWorker(); // its scheduler takes them
    await waitForDeliveries(w, s.id, 3, 'succeeded');
  });
});
