// Answers from an endpoint that once left a delivery stuck: a 429 to the circuit's probe, and a
// 2xx whose body holds NUL bytes. Real worker, real receiver, real database.
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { deliveriesOf, emit, makeTenant, startWorld, subscribe } from './webhook-harness.ts';

describe('what an endpoint answers', () => {
  it('a 429 to the half-open probe closes the circuit: the deliveries held back go out', async () => {
    // WEBHOOK_CONCURRENCY 4: one request in flight per endpoint, so the sixth request is the probe
    // the circuit lets through after five failures opened it (cool-down 300 ms in the harness).
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '4' } });
    const t = await makeTenant(w);
    const rx = await startReceiver((r) => (r.n <= 5 ? 500 : r.n === 6 ? { status: 429, headers: { 'retry-after': '1' } } : 200));
    const s = await subscribe(w, t, { url: rx.url, max_attempts: 10 });
    await emit(w, t.projectId, 6);
    // Left half-open, the circuit would re-offer these every 5 s without ever sending one.
    const rows = await waitFor(
      async () => {
        const all = await deliveriesOf(w, s.id);
        return all.length === 6 && all.every((d) => d.status === 'succeeded') ? all : undefined;
      },
      'all six delivered after the probe was answered 429',
      30_000,
    );
    // The 429 went to the probe: the sixth request waited out the cool-down the five failures opened.
    expect(rx.requests[5].at - rx.requests[4].at).toBeGreaterThanOrEqual(250);
    expect(rows.reduce((n, d) => n + d.attempts, 0)).toBe(rx.requests.length);
  }, 60_000);

  it("a 429 is not a failure of the endpoint: it neither counts as one nor starts the failing streak that disables a subscription", async () => {
    const w = await startWorld();
    const t = await makeTenant(w);
    const rx = await startReceiver((r) => (r.n <= 2 ? { status: 429, headers: { 'retry-after': '1' } } : 500));
    const s = await subscribe(w, t, { url: rx.url, max_attempts: 3 });
    await emit(w, t.projectId, 1);
    const [row] = await waitFor(async () => {
      const all = await deliveriesOf(w, s.id);
      return all.length === 1 && all[0].status === 'dead' ? all : undefined;
    }, 'the delivery dead after 429, 429, 500', 30_000);
    const attempts = (await w.db.query<{ status_code: number; error_class: string; at: Date }>(
      'SELECT status_code, error_class, at FROM webhook_attempts WHERE delivery_id = $1 ORDER BY n', [row.id])).rows;
    expect(attempts.map((x) => [x.status_code, x.error_class])).toEqual([[429, 'rate_limited'], [429, 'rate_limited'], [500, 'server_error']]);
    // The endpoint's counters are written about once a second: wait for the 500 to be in them.
    const sub = await waitFor(async () => {
      const r = (await w.db.query('SELECT failure_count, failing_since, last_failure_at, last_status_code FROM webhook_subscriptions WHERE id = $1', [s.id])).rows[0];
      return r.last_failure_at && new Date(r.last_failure_at) >= new Date(attempts[2].at) ? r : undefined;
    }, "the last attempt in the endpoint's counters");
    // Before: three failures, and a streak from the first 429.
    expect(sub).toMatchObject({ failure_count: 1, last_status_code: 500 });
    expect(new Date(sub.failing_since).getTime()).toBeGreaterThanOrEqual(new Date(attempts[2].at).getTime());
  }, 60_000);

  it('a 200 whose body holds NUL bytes is recorded as delivered, once', async () => {
    const w = await startWorld();
    const t = await makeTenant(w);
    const rx = await startReceiver(() => ({ status: 200, body: 'ok\u0000\u0000' }));
    const s = await subscribe(w, t, { url: rx.url });
    await emit(w, t.projectId, 1);
    const [row] = await waitFor(
      async () => {
        const all = await deliveriesOf(w, s.id);
        return all.length === 1 && all[0].status === 'succeeded' ? all : undefined;
      },
      'the delivery recorded as succeeded',
    );
    expect(row.attempts).toBe(1);
    expect(rx.requests).toHaveLength(1);
    const attempt = (await w.db.query('SELECT response_excerpt FROM webhook_attempts WHERE delivery_id = $1', [row.id])).rows[0];
    expect(attempt.response_excerpt).toBe('ok\ufffd\ufffd');
  }, 60_000);
});
