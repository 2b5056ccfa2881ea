// Deliveries end to end, against receivers the test controls: events committed to the outbox go
// through the relay, the fan-out, the dispatcher and the scheduler to a real HTTP server.
import { createHmac } from 'node:crypto';
import { beforeAll, describe, expect, it } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { PROJECT_HEADER } from '../../src/broker/broker.ts';
import { Queues } from '../../src/broker/topology.ts';
import { consumerMessagesTotal } from '../../src/observability/metrics.ts';
import { eventMessageBody } from '../../src/outbox/idempotent.ts';
import { FANOUT_CONSUMER } from '../../src/webhooks/fanout.ts';
import { waitFor } from '../support/env.ts';
import { startReceiver, type Received } from './receiver.ts';
import { api, deliveriesOf, emit, makeTenant, schedulerPass, startWorld, subscribe, waitForDeliveries, type TestTenant, type World } from './webhook-harness.ts';

function verifyBoth(secret: string, r: Received): void {
  const headers = { 'webhook-id': String(r.headers['webhook-id']), 'webhook-timestamp': String(r.headers['webhook-timestamp']), 'webhook-signature': String(r.headers['webhook-signature']) };
  new Webhook(secret).verify(r.body, headers); // throws unless a signature matches
  const hex = createHmac('sha256', Buffer.from(secret.slice('whsec_'.length), 'base64')).update(r.body).digest('hex');
  expect(r.headers['x-webhook-signature']).toBe(hex);
}

describe('webhook delivery', () => {
  let w: World;
  let a: TestTenant;
  beforeAll(async () => {
    w = await startWorld();
    a = await makeTenant(w);
  }, 120_000);

  it('signs every attempt so standardwebhooks and a hex HMAC both verify; webhook-id stays, the timestamp moves', async () => {
    // 429 with Retry-After: 1 first, so the retry lands in a later second than the first attempt.
    const rx = await startReceiver((r) => (r.n === 1 ? { status: 429, headers: { 'retry-after': '1' } } : 200));
    const s = await subscribe(w, a, { url: rx.url, events: ['contact.created'], headers: { 'X-Tenant': 'acme' } });
    const [event] = await emit(w, a.projectId);
    await waitForDeliveries(w, s.id, 1, 'succeeded');
    expect(rx.requests).toHaveLength(2);
    for (const r of rx.requests) verifyBoth(s.secret, r);
    const [first, second] = rx.requests;
    expect(first.headers['webhook-id']).toBe(event.id);
    expect(second.headers['webhook-id']).toBe(event.id);
    expect(Number(second.headers['webhook-timestamp'])).toBeGreaterThan(Number(first.headers['webhook-timestamp']));
    expect(second.body).toBe(first.body); // the body is built once; only the signature headers change
    expect(JSON.parse(first.body)).toEqual({ id: event.id, type: 'contact.created', event: 'contact.created', timestamp: event.occurred_at, project_id: a.projectId, data: event.data });
    expect(first.headers).toMatchObject({ 'content-type': 'application/json', 'x-tenant': 'acme', 'user-agent': expect.stringMatching(/^Ventros-CRM-Webhook\//) });
  });

  it('retries 500, 500 then succeeds on 200: three attempts spaced by the schedule, all recorded', async () => {
    const rx = await startReceiver((r) => (r.n <= 2 ? { status: 500, body: 'boom' } : 200));
    const s = await subscribe(w, a, { url: rx.url });
    await emit(w, a.projectId);
    const [d] = await waitForDeliveries(w, s.id, 1, 'succeeded');
    expect(rx.requests).toHaveLength(3);
    const [t1, t2, t3] = rx.requests.map((r) => r.at);
    // Schedule 200ms, 400ms with ±20% jitter.
    expect(t2 - t1).toBeGreaterThanOrEqual(160 - 5);
    expect(t3 - t2).toBeGreaterThanOrEqual(320 - 5);
    const detail = await api(w, a, 'GET', `/webhook-deliveries/${d.id}`);
    expect(detail.json).toMatchObject({ status: 'succeeded', attempt_count: 3, last_status_code: 200, next_attempt_at: null });
    expect(detail.json.attempts.map((x: any) => [x.n, x.status_code, x.error_class])).toEqual([
      [1, 500, 'server_error'],
      [2, 500, 'server_error'],
      [3, 200, 'success'],
    ]);
    expect(detail.json.attempts[0]).toMatchObject({ response_excerpt: 'boom', error: 'HTTP 500' });
    expect(detail.json.attempts.every((x: any) => x.duration_ms >= 0 && Date.parse(x.at) > 0)).toBe(true);
    await waitFor(async () => (await api(w, a, 'GET', `/webhook-subscriptions/${s.id}`)).json.success_count === 1, 'health counters flushed');
    const sub = (await api(w, a, 'GET', `/webhook-subscriptions/${s.id}`)).json;
    expect(sub).toMatchObject({ success_count: 1, failure_count: 2, failing_since: null, last_status_code: 200 });
    expect(sub.last_success_at).not.toBeNull();
  });

  it('gives up after max_attempts (dead), then delivers on manual retry and on recover once the receiver is back', async () => {
    let healthy = false;
    const rx = await startReceiver(() => (healthy ? 200 : 500));
    const s = await subscribe(w, a, { url: rx.url });
    const since = new Date(Date.now() - 1000).toISOString();
    await emit(w, a.projectId, 3);
    const dead = await waitForDeliveries(w, s.id, 3, 'dead');
    expect(dead.every((d) => d.attempts === 3 && d.last_status_code === 500)).toBe(true);
    expect(rx.requests).toHaveLength(9);
    const listed = await api(w, a, 'GET', `/webhook-subscriptions/${s.id}/deliveries?status=dead`);
    expect(listed.json.data).toHaveLength(3);

    healthy = true;
    const retried = await api(w, a, 'POST', `/webhook-deliveries/${dead[0].id}/retry`);
    expect(retried.status).toBe(202);
    await waitFor(async () => (await deliveriesOf(w, s.id)).find((d) => d.id === dead[0].id)?.status === 'succeeded', 'the retried delivery to succeed');
    expect(rx.requests).toHaveLength(10);

    // A recovered backlog waits on webhooks.due, behind nobody's new deliveries (before: on
    // webhooks.outbound, in front of every project's).
    const viaDue = async () => (await consumerMessagesTotal.get()).values.find((v) => v.labels.consumer === 'webhook-dispatcher-due' && v.labels.result === 'ok')?.value ?? 0;
    const dueBefore = await viaDue();
    const recovered = await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/recover`, { since });
    expect(recovered.json).toEqual({ recovered: 2 });
    await waitForDeliveries(w, s.id, 3, 'succeeded');
    expect(rx.requests).toHaveLength(12);
    expect(await viaDue()).toBeGreaterThanOrEqual(dueBefore + 2);
    const ids = new Set(rx.requests.slice(9).map((r) => r.headers['webhook-id']));
    expect(ids.size).toBe(3);
  });

  it('gives a recovered delivery its whole retry schedule again: an endpoint just back that first answers 503 with Retry-After gets it on the next try', async () => {
    let mode: 'down' | 'back' = 'down';
    let sinceBack = 0;
    const rx = await startReceiver(() => (mode === 'down' ? 500 : ++sinceBack === 1 ? { status: 503, headers: { 'retry-after': '1' } } : 200));
    const s = await subscribe(w, a, { url: rx.url, max_attempts: 2 });
    const since = new Date(Date.now() - 1000).toISOString();
    await emit(w, a.projectId);
    const [dead] = await waitForDeliveries(w, s.id, 1, 'dead');
    expect(dead.attempts).toBe(2);

    mode = 'back';
    expect((await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/recover`, { since })).json).toEqual({ recovered: 1 });
    // Before: the recovered delivery had no attempt left, and the 503 made it dead again.
    const [done] = await waitForDeliveries(w, s.id, 1, 'succeeded');
    const detail = (await api(w, a, 'GET', `/webhook-deliveries/${done.id}`)).json;
    expect(detail.attempts.map((x: any) => [x.n, x.status_code])).toEqual([[1, 500], [2, 500], [3, 503], [4, 200]]);
    expect(Date.parse(detail.attempts[3].at) - Date.parse(detail.attempts[2].at)).toBeGreaterThanOrEqual(1000 - 5);

    // Manual retry is still one more attempt: dead again after a failure, whatever a recovery gave before.
    mode = 'down';
    await emit(w, a.projectId);
    const dead2 = await waitFor(async () => (await deliveriesOf(w, s.id)).find((d) => d.id !== done.id && d.status === 'dead'), 'the second delivery dead');
    expect((await api(w, a, 'POST', `/webhook-deliveries/${dead2.id}/retry`)).status).toBe(202);
    await waitFor(async () => (await deliveriesOf(w, s.id)).find((d) => d.id === dead2.id && d.status === 'dead' && d.attempts === 3), 'dead again after its one more attempt');
    expect((await api(w, a, 'DELETE', `/webhook-subscriptions/${s.id}`)).status).toBe(204); // the tests after emit to this project too
  });

  it('disables the subscription on 410 Gone and sends nothing more', async () => {
    const rx = await startReceiver(() => 410);
    const s = await subscribe(w, a, { url: rx.url });
    await emit(w, a.projectId);
    await waitForDeliveries(w, s.id, 1, 'dead');
    const sub = (await api(w, a, 'GET', `/webhook-subscriptions/${s.id}`)).json;
    expect(sub).toMatchObject({ active: false, disabled_reason: expect.stringContaining('410') });
    expect(sub.disabled_at).not.toBeNull();
    const ev = await w.db.query(`SELECT data FROM outbox WHERE type = 'webhook.endpoint_disabled' AND aggregate_id = $1`, [s.id]);
    expect(ev.rows[0]?.data).toMatchObject({ subscription_id: s.id, reason: 'gone', last_status_code: 410 });
    await emit(w, a.projectId, 2);
    // The event log shows them published; the fan-out ignores a disabled subscription.
    await waitFor(async () => (await w.db.query(`SELECT 1 FROM outbox WHERE project_id = $1 AND published_at IS NULL`, [a.projectId])).rowCount === 0, 'events published');
    const probe = await subscribe(w, a, { url: (await startReceiver()).url });
    const [marker] = await emit(w, a.projectId);
    await waitFor(async () => (await deliveriesOf(w, probe.id)).some((d) => d.event_id === marker.id && d.status === 'succeeded'), 'a later event delivered elsewhere');
    expect(rx.requests).toHaveLength(1);
    expect(await deliveriesOf(w, s.id)).toHaveLength(1);
  });

  it('honours Retry-After on 429: the next attempt comes no sooner than asked', async () => {
    const rx = await startReceiver((r) => (r.n === 1 ? { status: 429, headers: { 'retry-after': '2' } } : 200));
    const s = await subscribe(w, a, { url: rx.url });
    await emit(w, a.projectId);
    const [pending] = await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      return rows[0]?.status === 'retrying' ? rows : undefined;
    }, 'the delivery to wait for its retry');
    expect(pending.last_status_code).toBe(429);
    await waitForDeliveries(w, s.id, 1, 'succeeded');
    expect(rx.requests[1].at - rx.requests[0].at).toBeGreaterThanOrEqual(2000);
  });

  it("never sends a project's events to another project's subscriptions", async () => {
    const b = await makeTenant(w);
    const [rxA, rxB] = [await startReceiver(), await startReceiver()];
    const sa = await subscribe(w, a, { url: rxA.url });
    const sb = await subscribe(w, b, { url: rxB.url });
    const events = await emit(w, a.projectId, 5);
    await waitFor(async () => (await deliveriesOf(w, sa.id)).filter((d) => d.status === 'succeeded').length >= 5, "A's deliveries");
    const [mine] = await emit(w, b.projectId);
    await waitForDeliveries(w, sb.id, 1, 'succeeded');
    expect(rxB.requests.map((r) => r.headers['webhook-id'])).toEqual([mine.id]);
    const seenByA = new Set(rxA.requests.map((r) => r.headers['webhook-id']));
    for (const e of events) expect(seenByA.has(e.id)).toBe(true);
    expect(seenByA.has(mine.id)).toBe(false);
  });

  it('creates nothing more when the fan-out receives an event it has already fanned out', async () => {
    const rx = await startReceiver();
    const s = await subscribe(w, a, { url: rx.url });
    const [event] = await emit(w, a.projectId);
    await waitForDeliveries(w, s.id, 1, 'succeeded');
    // The broker hands the fan-out the same event again (a redelivery after a lost ack).
    const fanned = async () => (await consumerMessagesTotal.get()).values.find((v) => v.labels.consumer === FANOUT_CONSUMER && v.labels.result === 'ok')?.value ?? 0;
    const before = await fanned();
    await w.broker.publish(event.type, [{ messageId: event.id, body: eventMessageBody(event), headers: { [PROJECT_HEADER]: a.projectId } }]);
    await waitFor(async () => (await fanned()) > before, 'the fan-out to handle the copy');
    await schedulerPass(w);
    expect(await deliveriesOf(w, s.id)).toHaveLength(1);
    expect(rx.requests).toHaveLength(1);
  });

  it('spaces requests to a rate-limited endpoint without spending attempts', async () => {
    const rx = await startReceiver();
    const s = await subscribe(w, a, { url: rx.url, rate_limit_per_second: 5 });
    await emit(w, a.projectId, 10);
    const done = await waitForDeliveries(w, s.id, 10, 'succeeded', 30_000);
    expect(done.every((d) => d.attempts === 1)).toBe(true);
    expect(rx.requests).toHaveLength(10);
    // When each attempt was sent, on the dispatcher's clock: arrival times at the receiver also
    // carry the first request's connection set-up and the machine's scheduling delays.
    const sent = await w.db.query<{ at: Date }>(
      'SELECT t.at FROM webhook_attempts t JOIN webhook_deliveries d ON d.id = t.delivery_id WHERE d.subscription_id = $1 ORDER BY t.at',
      [s.id],
    );
    const times = sent.rows.map((r) => new Date(r.at).getTime());
    expect(times).toHaveLength(10);
    // 10 requests at 5/s: slots 200 ms apart, the tenth 1.8 s after the first. One slot of slack
    // for a first send that started late; without the limit all ten went out within 0.3 s here.
    expect(times[9] - times[0]).toBeGreaterThanOrEqual(1800 - 200);
  }, 60_000);

  it('keeps paused deliveries waiting without spending attempts, and sends them on resume', async () => {
    const rx = await startReceiver();
    const s = await subscribe(w, a, { url: rx.url });
    await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/pause`);
    await emit(w, a.projectId, 2);
    const waiting = await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      return rows.length === 2 ? rows : undefined;
    }, 'deliveries created while paused');
    await schedulerPass(w);
    await schedulerPass(w);
    expect((await deliveriesOf(w, s.id)).map((d) => [d.status, d.attempts])).toEqual([
      ['pending', 0],
      ['pending', 0],
    ]);
    expect(waiting.every((d) => d.attempts === 0)).toBe(true);
    expect(rx.requests).toHaveLength(0);
    // "Send it again now" cannot be kept while paused: a 409 saying so, not a 202 that waits.
    const retried = await api(w, a, 'POST', `/webhook-deliveries/${waiting[0].id}/retry`);
    expect(retried.status).toBe(409);
    expect(retried.json.detail).toMatch(/paused/);
    const recovered = await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/recover`, { since: new Date(Date.now() - 60_000).toISOString() });
    expect(recovered.status).toBe(409);
    await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/resume`);
    const done = await waitForDeliveries(w, s.id, 2, 'succeeded');
    expect(done.every((d) => d.attempts === 1)).toBe(true);
  });

  it('sends a webhook.test event to the one subscription asked, and signs it with both secrets during rotation', async () => {
    const [rx, other] = [await startReceiver(), await startReceiver()];
    const s = await subscribe(w, a, { url: rx.url, events: ['*'] });
    await subscribe(w, a, { url: other.url, events: ['*'] });
    await waitFor(async () => (await w.db.query(`SELECT 1 FROM outbox WHERE project_id = $1 AND published_at IS NULL`, [a.projectId])).rowCount === 0, 'earlier events published');
    const rotated = (await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/rotate-secret`)).json;
    const sent = await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/test`);
    expect(sent.status).toBe(202);
    expect(sent.json).toMatchObject({ event_type: 'webhook.test', status: 'pending' });
    await waitFor(() => rx.requests.length === 1, 'the test event');
    const [r] = rx.requests;
    expect(JSON.parse(r.body)).toMatchObject({ type: 'webhook.test', data: { subscription_id: s.id } });
    expect(String(r.headers['webhook-signature']).split(' ')).toHaveLength(2);
    new Webhook(s.secret).verify(r.body, r.headers as Record<string, string>);
    verifyBoth(rotated.secret, r);
    expect(other.requests).toHaveLength(0);
  });

  it('rotating again within the overlap keeps every secret it promised signing: a receiver on the first, second or third verifies', async () => {
    const rx = await startReceiver();
    const s = await subscribe(w, a, { url: rx.url, events: ['webhook.test'] });
    const second = (await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/rotate-secret`)).json;
    const third = (await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/rotate-secret`)).json;
    expect(Date.parse(third.previous_secret_expires_at)).toBeGreaterThanOrEqual(Date.parse(second.previous_secret_expires_at));
    expect((await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/test`)).status).toBe(202);
    await waitFor(() => rx.requests.length === 1, 'the test event');
    const [r] = rx.requests;
    expect(String(r.headers['webhook-signature']).split(' ')).toHaveLength(3);
    // Before: the second rotation replaced the first secret, promised for 24 h, with the second.
    for (const secret of [s.secret, second.secret, third.secret]) new Webhook(secret).verify(r.body, r.headers as Record<string, string>);
  });
});

describe('the two delivery queues', () => {
  it('puts new deliveries on webhooks.outbound and those due again on webhooks.due', async () => {
    // No dispatcher: the messages stay in their queues for the test to count.
    const w = await startWorld({ worker: { parts: { fanout: true, scheduler: true, dispatcher: false } } });
    const t = await makeTenant(w);
    const s = await subscribe(w, t, { url: 'http://127.0.0.1:9/hooks' });
    const depth = async (queue: string) => (await w.broker.stats([queue]))[0].depth;
    await emit(w, t.projectId, 3);
    await waitFor(async () => (await depth(Queues.webhooksOutbound)) === 3, 'three new deliveries queued');
    expect(await depth(Queues.webhooksDue)).toBe(0);
    // Two of them failed once and are due for their retry.
    await w.db.query(
      `UPDATE webhook_deliveries SET status = 'retrying', attempts = 1, next_attempt_at = now() - interval '1 second', enqueued_at = NULL
       WHERE id IN (SELECT id FROM webhook_deliveries WHERE subscription_id = $1 ORDER BY id LIMIT 2)`,
      [s.id],
    );
    await schedulerPass(w);
    expect(await depth(Queues.webhooksDue)).toBe(2);
    expect(await depth(Queues.webhooksOutbound)).toBe(3);
  });
});
