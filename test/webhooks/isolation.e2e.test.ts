// Endpoint isolation: a receiver that never answers, or keeps failing, must not take the workers
// from the healthy ones — the per-subscription in-flight cap and the circuit breaker see to it,
// and deliveries held back by them wait without spending attempts.
import { beforeAll, describe, expect, it } from 'vitest';
import { Queues } from '../../src/broker/topology.ts';
import { webhookCircuitOpen } from '../../src/observability/metrics.ts';
import { waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { deliveriesOf, emit, makeTenant, startWorld, subscribe, type TestTenant, type World } from './webhook-harness.ts';

describe('webhook endpoint isolation', () => {
  let w: World;
  let a: TestTenant;
  beforeAll(async () => {
    // 8 workers → at most 2 attempts in flight per subscription. A long cool-down keeps an opened
    // circuit open for the whole test.
    w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '8' }, worker: { circuit: { failureThreshold: 5, cooldownMs: 60_000 } } });
    a = await makeTenant(w);
  }, 120_000);

  it('keeps delivering to nine healthy endpoints while a tenth never answers', async () => {
    const slow = await startReceiver(() => 'hang');
    const slowSub = await subscribe(w, a, { url: slow.url, timeout_seconds: 120 });
    const healthy = await Promise.all(Array.from({ length: 9 }, () => startReceiver()));
    const subs: Array<{ id: string }> = [];
    for (const rx of healthy) subs.push(await subscribe(w, a, { url: rx.url }));

    const started = Date.now();
    await emit(w, a.projectId, 10);
    await waitFor(
      async () => {
        for (const s of subs) if ((await deliveriesOf(w, s.id)).filter((d) => d.status === 'succeeded').length < 10) return false;
        return true;
      },
      '90 deliveries to the healthy endpoints',
      100_000,
    );
    // All of it inside a single timeout of the slow endpoint: its attempts never held the others up.
    expect(Date.now() - started).toBeLessThan(120_000);
    expect(healthy.every((rx) => rx.requests.length === 10)).toBe(true);
    // It got no more than its share of the workers, and its waiting deliveries spent no attempts.
    expect(slow.requests.length).toBeLessThanOrEqual(2);
    const waiting = await deliveriesOf(w, slowSub.id);
    expect(waiting).toHaveLength(10);
    expect(waiting.reduce((n, d) => n + d.attempts, 0)).toBe(slow.requests.length);
  }, 150_000);

  it('opens the circuit after repeated failures: later deliveries wait for the cool-down without spending attempts', async () => {
    const rx = await startReceiver(() => 500);
    const s = await subscribe(w, a, { url: rx.url, max_attempts: 10 });
    await emit(w, a.projectId, 10);
    // The cool-down is 60 s; anything parked past this point waits for it, not for a retry step.
    const coolDownEnds = Date.now() + 30_000;
    const rows = await waitFor(
      async () => {
        const all = await deliveriesOf(w, s.id);
        const parked = all.length === 10 && all.every((d) => d.status !== 'sending' && d.next_attempt_at && d.next_attempt_at.getTime() > coolDownEnds);
        return parked ? all : undefined;
      },
      'every delivery parked until the circuit half-opens',
      50_000,
    );
    // Five failures open it; an attempt already in flight then may add one more.
    expect(rx.requests.length).toBeGreaterThanOrEqual(5);
    expect(rx.requests.length).toBeLessThanOrEqual(6);
    expect(rows.reduce((n, d) => n + d.attempts, 0)).toBe(rx.requests.length);
    const gauge = (await webhookCircuitOpen.get()).values.find((v) => v.labels.subscription === s.id);
    expect(gauge?.value).toBe(1);
  }, 90_000);
});

describe('requests in flight across endpoints', () => {
  it("keeps delivering another project's events while one project's four endpoints all hang", async () => {
    // 8 workers: each endpoint may hold 2 requests, each project 4 — so the four hanging endpoints
    // of one project, 2 each, would hold all 8 without the project's cap.
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '8' } });
    const [a, b] = [await makeTenant(w), await makeTenant(w)];
    let peak = 0;
    const hangingNow = () => hanging.reduce((n, rx) => n + rx.hanging(), 0);
    const hang = () => {
      peak = Math.max(peak, hangingNow() + 1);
      return 'hang' as const;
    };
    const hanging = await Promise.all(Array.from({ length: 4 }, () => startReceiver(hang)));
    for (const rx of hanging) await subscribe(w, a, { url: rx.url, timeout_seconds: 60, max_attempts: 1 });
    const fine = await startReceiver();
    const fineSub = await subscribe(w, b, { url: fine.url });

    await emit(w, a.projectId, 3); // 12 deliveries, 3 per hanging endpoint
    await waitFor(() => hangingNow() >= 4, 'four requests hanging');
    // Every one of the 12 was made and 4 (at least) are out; the rest wait for a slot.
    await waitFor(async () => {
      const rows = (await Promise.all((await w.db.query<{ id: string }>('SELECT id FROM webhook_subscriptions WHERE project_id = $1', [a.projectId])).rows.map((r) => deliveriesOf(w, r.id)))).flat();
      return rows.length === 12 && rows.filter((d) => d.status === 'sending').length >= 4;
    }, "project a's deliveries offered");
    const [event] = await emit(w, b.projectId, 1);
    // Long before any hanging request times out (60 s): a slot was free for it.
    await waitFor(() => fine.requests.length === 1, "project b's delivery", 20_000);
    expect(fine.requests[0].headers['webhook-id']).toBe(event.id);
    await waitFor(async () => (await deliveriesOf(w, fineSub.id))[0]?.status === 'succeeded', "project b's delivery recorded");
    expect(peak).toBe(4);
    expect(hangingNow()).toBe(4);
  }, 60_000);

  it('never has more than WEBHOOK_CONCURRENCY requests out, however many endpoints hang', async () => {
    // 4 requests at most; the consumer takes 8 deliveries, and each endpoint may have one in flight.
    // The six endpoints belong to three projects, two each: a project may hold 2 of the 4.
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '4' } });
    const tenants = [await makeTenant(w), await makeTenant(w), await makeTenant(w)];
    // How many requests hang at the six endpoints together, counted as each one arrives. A request
    // given up has its connection closed before its slot is handed on, so the receivers see it
    // close before the request that takes the slot arrives.
    let peak = 0;
    const hangingNow = () => hanging.reduce((n, rx) => n + rx.hanging(), 0);
    const hang = () => {
      peak = Math.max(peak, hangingNow() + 1); // the arriving one is not counted as hanging yet
      return 'hang' as const;
    };
    const hanging = await Promise.all(Array.from({ length: 6 }, () => startReceiver(hang)));
    // A timeout long enough that the first four are all out before any is given up, however slow
    // the machine; the last two are reached only once one of them is.
    for (const [i, rx] of hanging.entries()) await subscribe(w, tenants[i % 3], { url: rx.url, timeout_seconds: 5, max_attempts: 1 });
    for (const t of tenants) await emit(w, t.projectId, 1);
    await waitFor(() => hanging.every((rx) => rx.requests.length > 0), 'a request at each of the six endpoints', 30_000);
    // Four at once, and never more.
    expect(peak).toBe(4);
    // The fifth waited for a slot: it came once one of the four was given up (its connection
    // closed), not with them. (Compared with the close, not with the first arrival plus the timeout:
    // on a loaded machine a request can reach the receiver well after its timeout started.)
    const first = hanging.map((rx) => rx.requests[0]).sort((x, y) => x.at - y.at);
    const firstGivenUp = Math.min(...first.slice(0, 4).map((r) => r.closedAt ?? Infinity));
    expect(firstGivenUp).toBeLessThan(Infinity);
    expect(first[4].at).toBeGreaterThanOrEqual(firstGivenUp - 50);
  }, 60_000);
});

describe('an attempt under way', () => {
  it('holds a request slot, not the queue message: the message is acked once the delivery is claimed', async () => {
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '8' } });
    const t = await makeTenant(w);
    const rx = await startReceiver(() => 'hang');
    const s = await subscribe(w, t, { url: rx.url, timeout_seconds: 60 });
    await emit(w, t.projectId, 2);
    await waitFor(() => rx.hanging() === 2, 'two attempts hanging at the endpoint');
    // Both rows are claimed (their lease is the truth now) and nothing is left in the queue.
    expect((await deliveriesOf(w, s.id)).map((d) => [d.status, d.attempts])).toEqual([
      ['sending', 1],
      ['sending', 1],
    ]);
    await waitFor(async () => (await w.broker.stats([Queues.webhooksOutbound]))[0].depth === 0, 'the queue messages acked');
  }, 60_000);
});
