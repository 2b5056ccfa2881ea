// The guards around delivery: the SSRF check again at connection time (DNS can change after a URL
// was accepted), disabling endpoints that fail for days, the metrics, and the worker as main.ts
// wires it.
import { beforeAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startVentros } from '../../src/main.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { startRelay } from '../../src/outbox/relay.ts';
import type { ResolveHost } from '../../src/webhooks/ssrf-guard.ts';
import { call, register } from '../http/harness.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { api, contactCreated, deliveriesOf, emit, makeTenant, schedulerPass, SECRET_KEY, startWorld, subscribe, waitForDeliveries, type TestTenant, type World } from './webhook-harness.ts';

describe('webhook delivery guards', () => {
  let w: World;
  let a: TestTenant;
  // A name that resolved to a public address when it was saved, and to loopback now.
  const resolve: ResolveHost = async () => [{ address: '127.0.0.1', family: 4 }];
  beforeAll(async () => {
    // The API accepts private URLs (as if saved before DNS changed); the dispatcher refuses them.
    w = await startWorld({ worker: { config: loadConfig({ WEBHOOK_RETRY_SCHEDULE: '100ms,100ms', WEBHOOK_ALLOW_PRIVATE_URLS: 'false' }), resolve, disableCheckEveryMs: 0 } });
    a = await makeTenant(w);
  }, 120_000);

  it('refuses at delivery time a host that now resolves to loopback, and a private address', async () => {
    const rx = await startReceiver();
    const byName = await subscribe(w, a, { url: `http://rebound.example.com:${rx.port}/hooks` });
    const byAddress = await subscribe(w, a, { url: rx.url });
    await emit(w, a.projectId);
    for (const s of [byName, byAddress]) {
      const [d] = await waitForDeliveries(w, s.id, 1, 'dead');
      const detail = (await api(w, a, 'GET', `/webhook-deliveries/${d.id}`)).json;
      expect(detail.attempts.map((x: any) => x.error_class)).toEqual(['blocked_address', 'blocked_address', 'blocked_address']);
      expect(detail.last_error).toMatch(/private, loopback or reserved/);
    }
    expect(rx.requests).toHaveLength(0);
  });

  it('disables a subscription whose every attempt has failed for the configured days, and says so', async () => {
    const failing = await subscribe(w, a, { url: 'http://127.0.0.1:9/never' });
    const recent = await subscribe(w, a, { url: 'http://127.0.0.1:9/never' });
    const paused = await subscribe(w, a, { url: 'http://127.0.0.1:9/never' });
    await api(w, a, 'POST', `/webhook-subscriptions/${paused.id}/pause`);
    // Failing since `days` ago, the last failure `lastDaysAgo` ago (an attempt just now by default).
    const setFailingSince = (id: string, days: number, lastDaysAgo = 0) =>
      w.db.query(
        `UPDATE webhook_subscriptions SET failing_since = now() - make_interval(days => $2), last_failure_at = now() - make_interval(days => $3),
           last_error = 'HTTP 500', last_status_code = 500 WHERE id = $1`,
        [id, days, lastDaysAgo],
      );
    // Failed for a day, then sent nothing for five (fixed meanwhile, with no events since).
    const quiet = await subscribe(w, a, { url: 'http://127.0.0.1:9/never' });
    // A delivery still waiting for its endpoint is ended with it.
    await w.db.query(
      `INSERT INTO webhook_deliveries (id, project_id, subscription_id, event_id, event_type, body, status, attempts, next_attempt_at)
       VALUES (gen_random_uuid(), $1, $2, gen_random_uuid(), 'contact.created', '{}', 'retrying', 2, now() + interval '1 hour')`,
      [a.projectId, failing.id],
    );
    await setFailingSince(failing.id, 6);
    await setFailingSince(recent.id, 4);
    await setFailingSince(paused.id, 6);
    await setFailingSince(quiet.id, 6, 5);
    await schedulerPass(w);

    const got = async (id: string) => (await api(w, a, 'GET', `/webhook-subscriptions/${id}`)).json;
    expect(await got(failing.id)).toMatchObject({ active: false, disabled_reason: 'every attempt failed for 5 days' });
    expect(await got(recent.id)).toMatchObject({ active: true, disabled_at: null });
    expect(await got(quiet.id)).toMatchObject({ active: true, disabled_at: null });
    expect(await got(paused.id)).toMatchObject({ active: true });
    expect((await deliveriesOf(w, failing.id)).map((d) => d.status)).toEqual(['dead']);
    const ev = await w.db.query(`SELECT data FROM outbox WHERE type = 'webhook.endpoint_disabled' AND aggregate_id = $1`, [failing.id]);
    expect(ev.rows).toHaveLength(1);
    expect(ev.rows[0].data).toMatchObject({ subscription_id: failing.id, reason: 'failing', last_status_code: 500, last_error: 'HTTP 500' });
    expect(Date.now() - Date.parse(ev.rows[0].data.failing_since)).toBeGreaterThan(5.9 * 86_400_000);

    // Resumed after six days paused: no attempt was made meanwhile, so its failing days count
    // again from the resume, and the deliveries that waited are sent, not ended with it.
    await w.db.query(
      `INSERT INTO webhook_deliveries (id, project_id, subscription_id, event_id, event_type, body, status, attempts, next_attempt_at)
       VALUES (gen_random_uuid(), $1, $2, gen_random_uuid(), 'contact.created', '{}', 'pending', 0, now() + interval '1 hour')`,
      [a.projectId, paused.id],
    );
    const resumed = (await api(w, a, 'POST', `/webhook-subscriptions/${paused.id}/resume`)).json;
    expect(Date.now() - Date.parse(resumed.failing_since)).toBeLessThan(60_000);
    await schedulerPass(w);
    expect(await got(paused.id)).toMatchObject({ active: true, paused: false });
    expect((await deliveriesOf(w, paused.id)).map((d) => d.status)).not.toContain('dead');
    // Pausing and resuming one that was not failing starts no failing streak.
    await api(w, a, 'POST', `/webhook-subscriptions/${recent.id}/pause`);
    await w.db.query('UPDATE webhook_subscriptions SET failing_since = NULL WHERE id = $1', [recent.id]);
    expect((await api(w, a, 'POST', `/webhook-subscriptions/${recent.id}/resume`)).json).toMatchObject({ paused: false, failing_since: null });
  });

  it('exposes delivery counts, attempt durations and open circuits on /metrics', async () => {
    const r = await w.app.inject({ method: 'GET', url: '/metrics' });
    expect(r.body).toMatch(/^webhook_deliveries_total\{result="dead"\} \d+/m);
    expect(r.body).toMatch(/^webhook_attempt_duration_seconds_count \d+/m);
    expect(r.body).toContain('webhook_circuit_open');
  });
});

describe('the webhook worker as the composition root starts it', () => {
  it('delivers an event committed to the outbox to a subscriber', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db, { pollMs: 50 });
    const config = loadConfig({ LOG_LEVEL: 'silent', WEBHOOK_ALLOW_PRIVATE_URLS: 'true', SECRET_KEY });
    const running = await startVentros({ config, db, broker, listen: false, logger: silentLogger });
    onCleanup(() => running.stop());
    // The relay may not be part of the composition root yet; a second one is harmless.
    const relay = startRelay({ db, broker, pollMs: 50 });
    onCleanup(() => relay.stop());
    const reg = await register(running.app!);
    const rx = await startReceiver();
    const s = await call(running.app!, reg.json.api_key.key, 'POST', '/webhook-subscriptions', { body: { url: rx.url, events: ['contact.*'] } });
    expect(s.status).toBe(201);
    const [event] = await emit({ db } as World, reg.json.project.id, 1, contactCreated);
    await waitFor(() => rx.requests.length === 1, 'the event at the subscriber');
    expect(rx.requests[0].headers['webhook-id']).toBe(event.id);
  }, 120_000);
});
