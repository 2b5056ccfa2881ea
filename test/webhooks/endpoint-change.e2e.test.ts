// A subscription pointed at another URL, or turned back on by hand, is a fresh start for its
// endpoint: the circuit the old one opened, its retry back-offs and its failing streak no longer
// hold its deliveries back. Real worker, real receivers; cool-downs and retries of ten minutes, so
// only the change can bring the deliveries out within the test.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import pino from 'pino';
import { describe, expect, it } from 'vitest';
import type { Database, Row } from '../../src/db/database.ts';
import { ENDPOINT_CHANGES } from '../../src/db/webhook-subscriptions.sql.ts';
import { webhookCircuitOpen } from '../../src/observability/metrics.ts';
import { DEFAULT_CIRCUIT_OPTIONS } from '../../src/webhooks/circuit-breaker.ts';
import { cleanUpAfterEachTest, onCleanup, waitFor } from '../support/env.ts';
import { wrapDatabase } from '../support/wrapped-db.ts';
import { startReceiver } from './receiver.ts';
import { api, contactUpdated, deliveriesOf, emit, makeTenant, startWorld, subscribe, type World } from './webhook-harness.ts';
import { Queues } from '../../src/broker/topology.ts';
import { enqueueDeliveries } from '../../src/webhooks/outbound-queue.ts';

cleanUpAfterEachTest();

const LONG = { env: { WEBHOOK_CONCURRENCY: '4', WEBHOOK_RETRY_SCHEDULE: '10m,10m,10m' }, worker: { circuit: { failureThreshold: 2, cooldownMs: 600_000, maxCooldownMs: 600_000 } } };

const circuitOpen = async (subscriptionId: string) => (await webhookCircuitOpen.get()).values.some((v) => v.labels.subscription === subscriptionId && v.value === 1);

/** Two deliveries failed and opened the circuit; the others wait behind it, none being sent. */
async function openedOn(w: World, subscriptionId: string, n: number): Promise<void> {
  await waitFor(() => circuitOpen(subscriptionId), 'the circuit to open', 30_000);
  await waitFor(async () => {
    const rows = await deliveriesOf(w, subscriptionId);
    return rows.length === n && rows.every((d) => d.status === 'pending' || d.status === 'retrying');
  }, 'every delivery waiting');
}

/**
 * Starts the world's worker with its LISTEN for endpoint changes under the test's control: what
 * arrives while deafened is lost, as across a dropped connection; `resume` does what the adapter
 * does once it has reconnected.
 */
async function startDeafenableWorker(w: World): Promise<{ deafen(): void; resume(): void }> {
  let deaf = false;
  let onResumed: (() => void) | undefined;
  const db = wrapDatabase(w.db, {
    listen: (channel, onNotify, onResume) => {
      if (channel === ENDPOINT_CHANGES) onResumed = onResume;
      return w.db.listen(channel, (payload) => void (channel === ENDPOINT_CHANGES && deaf ? undefined : onNotify(payload)), onResume);
    },
  });
  await w.startWorker({ ...LONG.worker, db });
  return {
    deafen: () => void (deaf = true),
    resume() {
      deaf = false;
      expect(onResumed).toBeTypeOf('function');
      onResumed!();
    },
  };
}

/**
 * A subscription to an endpoint that answers 500, with `n` deliveries, two of which failed and
 * opened its circuit; and a fixed endpoint to move it to.
 */
async function brokenEndpoint(w: World, n: number) {
  const t = await makeTenant(w);
  const broken = await startReceiver(() => 500);
  const fixed = await startReceiver(() => 200);
  const s = await subscribe(w, t, { url: broken.url });
  await emit(w, t.projectId, n);
  await openedOn(w, s.id, n);
  return { t, broken, fixed, s };
}

describe('an endpoint that changes', () => {
  it('a new URL gets the deliveries at once, and starts its own failing streak', async () => {
    const w = await startWorld(LONG);
    const { t, broken, fixed, s } = await brokenEndpoint(w, 4);
    expect(broken.requests).toHaveLength(2);
    // Health is written in batches, shortly after the attempts.
    await waitFor(async () => (await api(w, t, 'GET', `/webhook-subscriptions/${s.id}`)).json.failing_since !== null, 'the failing streak recorded');

    const moved = await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { url: fixed.url });
    expect(moved.status).toBe(200);
    expect(moved.json.failing_since).toBeNull();
    await waitFor(async () => (await deliveriesOf(w, s.id)).every((d) => d.status === 'succeeded'), 'all four delivered to the new URL', 30_000);
    expect(fixed.requests).toHaveLength(4);
    expect(broken.requests).toHaveLength(2);
    expect(await circuitOpen(s.id)).toBe(false);
  }, 90_000);

  it('turned off and back on by hand, it is tried again at once', async () => {
    const w = await startWorld(LONG);
    const t = await makeTenant(w);
    let healthy = false;
    const rx = await startReceiver(() => (healthy ? 200 : 500));
    const s = await subscribe(w, t, { url: rx.url });
    await emit(w, t.projectId, 3);
    await openedOn(w, s.id, 3);
    // Fixed on the receiver's side; the user turns the subscription off and on again.
    healthy = true;
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: false })).status).toBe(200);
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: true })).status).toBe(200);
    // The three that waited (turned off by hand, they were kept) go at once, and a new event too.
    const [event] = await emit(w, t.projectId, 1);
    await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      return rows.length === 4 && rows.every((d) => d.status === 'succeeded');
    }, 'all four delivered', 30_000);
    expect(rx.requests.some((r) => r.headers['webhook-id'] === event.id)).toBe(true);
    expect(await circuitOpen(s.id)).toBe(false);
  }, 90_000);

  it('a new URL for a subscription turned off ends nothing: its deliveries wait for it to be back on', async () => {
    const w = await startWorld(LONG);
    const { t, fixed, s } = await brokenEndpoint(w, 3);
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: false })).status).toBe(200);
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { url: fixed.url })).status).toBe(200);
    // Made due while off, they would be claimed and ended as "subscription disabled".
    const waiting = await deliveriesOf(w, s.id);
    expect(waiting.map((d) => d.status).sort()).toEqual(['pending', 'retrying', 'retrying']);
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: true })).status).toBe(200);
    let last: unknown;
    await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      last = rows.map((d) => [d.status, d.attempts, d.next_attempt_at?.toISOString(), d.last_error]);
      return rows.every((d) => d.status === 'succeeded');
    }, 'all three delivered to the new URL', 30_000).catch((err: Error) => {
      // Seen once under heavy load (not reproduced): say where the deliveries stood.
      throw new Error(`${err.message}; deliveries: ${JSON.stringify(last)}; requests at the new URL: ${fixed.requests.length}`);
    });
    expect(fixed.requests).toHaveLength(3);
  }, 90_000);
});

/**
 * The worker's view of the database, with two doors the test opens when it chooses: the endpoint
 * change notifications (held while `hold`, let through by `hear`) and the dispatcher's
 * postponement writes (held while `hold`, let through by `release`). `bringForwards` counts the
 * dispatcher's own bring-forward writes that completed.
 */
function gatedDb(db: Database) {
  const notifications: Array<() => void> = [];
  const postpones: Array<() => void> = [];
  const gate = {
    hold: false,
    postponesHeld: 0,
    bringForwards: 0,
    hear: () => notifications.splice(0).forEach((go) => go()),
    release: () => {
      gate.hold = false;
      postpones.splice(0).forEach((go) => go());
    },
  };
  const wrapped: Database = {
    kind: db.kind,
    exec: (sql) => db.exec(sql),
    transaction: (fn, setup) => db.transaction(fn, setup),
    ping: (ms) => db.ping(ms),
    close: () => db.close(),
    async query<T extends Row = Row>(sql: string, params?: readonly unknown[]) {
      if (gate.hold && /AS p\(id, until, circuit\)/.test(sql)) {
        gate.postponesHeld++;
        await new Promise<void>((resolve) => postpones.push(resolve));
      }
      const r = await db.query<T>(sql, params);
      if (/FROM webhook_subscriptions s/.test(sql) && /next_attempt_at = now\(\)/.test(sql)) gate.bringForwards++;
      return r;
    },
    listen: (channel, onNotify) =>
      db.listen(channel, (payload) => {
        if (channel === ENDPOINT_CHANGES && gate.hold) notifications.push(() => onNotify(payload));
        else onNotify(payload);
      }),
  };
  return { db: wrapped, gate };
}

describe('an endpoint change heard after the old circuit has postponed a delivery', () => {
  it('the postponement that lands after the change is undone: the delivery goes to the new URL at once', async () => {
    const w = await startWorld({ env: LONG.env, worker: false });
    const { db, gate } = gatedDb(w.db);
    await w.startWorker({ ...LONG.worker, db });
    const { t, fixed, s } = await brokenEndpoint(w, 3);

    // The dispatcher has not heard of the change yet when the API makes the deliveries due: its
    // circuit, still open, postpones them for ten minutes — a write still on its way when the
    // change is heard and its bring-forward done.
    gate.hold = true;
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { url: fixed.url })).status).toBe(200);
    await waitFor(() => gate.postponesHeld > 0, 'a delivery postponed by the old circuit', 30_000);
    gate.hear();
    await waitFor(() => gate.bringForwards > 0, "the dispatcher's bring-forward after the change", 30_000);
    gate.release();
    await waitFor(async () => (await deliveriesOf(w, s.id)).every((d) => d.status === 'succeeded'), 'all three delivered to the new URL', 30_000).catch(async (err) => {
      const rows = await deliveriesOf(w, s.id);
      throw new Error(`${(err as Error).message}; ${rows.map((d) => `${d.status} due in ${d.next_attempt_at ? Math.round((d.next_attempt_at.getTime() - Date.now()) / 1000) : '-'} s`).join(', ')}`);
    });
    expect(fixed.requests).toHaveLength(3);
  }, 90_000);
});

describe('an endpoint change announced while the dispatcher could not hear it', () => {
  it('is caught up on once LISTEN is back: the deliveries the old circuit postponed go to the new URL at once', async () => {
    const w = await startWorld({ env: LONG.env, worker: false });
    const listening = await startDeafenableWorker(w);
    const { t, fixed, s } = await brokenEndpoint(w, 3);
    // Another broken endpoint, only renamed meanwhile: not another endpoint, its circuit stays.
    const renamed = await brokenEndpoint(w, 2);

    listening.deafen();
    expect((await api(w, renamed.t, 'PATCH', `/webhook-subscriptions/${renamed.s.id}`, { name: 'renamed while unheard' })).status).toBe(200);
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { url: fixed.url })).status).toBe(200);
    // The API made them due; the dispatcher, its circuit still open on the old endpoint, put
    // them off to the end of its ten-minute cool-down.
    await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      return rows.length === 3 && rows.every((d) => d.next_attempt_at !== null && d.next_attempt_at.getTime() > Date.now() + 60_000);
    }, 'the deliveries postponed by the old circuit', 30_000);
    expect(fixed.requests).toHaveLength(0);

    listening.resume();
    await waitFor(async () => (await deliveriesOf(w, s.id)).every((d) => d.status === 'succeeded'), 'all three delivered to the new URL', 30_000);
    expect(fixed.requests).toHaveLength(3);
    expect(await circuitOpen(s.id)).toBe(false);
    expect(await circuitOpen(renamed.s.id)).toBe(true);
    expect(renamed.broken.requests).toHaveLength(2);
    const waiting = await deliveriesOf(w, renamed.s.id);
    expect(waiting.every((d) => d.status !== 'succeeded' && d.next_attempt_at !== null && d.next_attempt_at.getTime() > Date.now() + 60_000)).toBe(true);
  }, 90_000);
});

/**
 * A world whose one subscription (contact.created) has an endpoint that fails until `up()`, with
 * `n` deliveries, two of which failed and opened its circuit.
 */
async function failingUntilUp(n: number, world: Parameters<typeof startWorld>[0] = LONG) {
  const w = await startWorld(world);
  const t = await makeTenant(w);
  let isUp = false;
  const rx = await startReceiver(() => (isUp ? 200 : 500));
  const s = await subscribe(w, t, { url: rx.url, events: ['contact.created'] });
  await emit(w, t.projectId, n);
  await openedOn(w, s.id, n);
  return { w, t, rx, s, up: () => void (isUp = true) };
}

describe('a manual retry or a test event while the circuit is open', () => {
  it('a manual retry goes at once; its success closes the circuit and the held deliveries follow', async () => {
    const w = await startWorld(LONG);
    const t = await makeTenant(w);
    let up = false;
    const rx = await startReceiver(() => (up ? 200 : 500));
    const s = await subscribe(w, t, { url: rx.url });
    await emit(w, t.projectId, 4);
    await openedOn(w, s.id, 4);
    up = true; // fixed; the circuit would hold every delivery for ten minutes more
    // Every one held: put off to the end of the cool-down or its retry (one the dispatcher is just
    // now putting off is `sending` for a moment — a retry then is a 409 — and a postponement that
    // lands after the success's bring-forward holds its delivery for the cool-down: noted).
    const rows = await waitFor(async () => {
      const all = await deliveriesOf(w, s.id);
      return all.every((d) => d.next_attempt_at !== null && d.next_attempt_at.getTime() > Date.now() + 60_000) ? all : undefined;
    }, 'every delivery held back by the circuit or its retry');
    const held = rows.find((d) => d.status === 'pending')!;
    expect((await api(w, t, 'POST', `/webhook-deliveries/${held.id}/retry`)).status).toBe(202);
    let last: unknown;
    await waitFor(async () => {
      const now = await deliveriesOf(w, s.id);
      last = now.map((d) => [d.id === held.id, d.status, d.attempts, d.next_attempt_at?.toISOString()]);
      return now.every((d) => d.status === 'succeeded');
    }, 'the retried delivery, then the rest', 30_000).catch((err: Error) => {
      throw new Error(`${err.message}; deliveries: ${JSON.stringify(last)}`);
    });
    expect(await circuitOpen(s.id)).toBe(false);
    expect(rx.requests).toHaveLength(2 + 4);
  }, 90_000);

  it("a manual retry that its project's cap puts off keeps its pass: it goes once the project has room, the circuit still open", async () => {
    // 4 request slots: 1 per endpoint, 2 per project.
    const { w, t, rx, s, up } = await failingUntilUp(2, { env: { ...LONG.env, WEBHOOK_CONCURRENCY: '4' }, worker: LONG.worker });
    // Two other endpoints of the project hang: they hold its two slots.
    let hang = true;
    const slow = await Promise.all([0, 1].map(() => startReceiver(() => (hang ? 'hang' : 200))));
    for (const x of slow) await subscribe(w, t, { url: x.url, events: ['contact.updated'], timeout_seconds: 30 });
    await emit(w, t.projectId, 1, contactUpdated);
    await waitFor(() => slow.every((x) => x.hanging() === 1), 'both slow endpoints holding a request');

    up();
    const [held] = await deliveriesOf(w, s.id);
    const asked = Date.now();
    expect((await api(w, t, 'POST', `/webhook-deliveries/${held.id}/retry`)).status).toBe(202);
    await waitFor(async () => {
      const d = (await deliveriesOf(w, s.id)).find((x) => x.id === held.id)!;
      // Due now once retried; put off, by at least 0.8 s (the age of the project's oldest attempt).
      return d.status === 'retrying' && d.next_attempt_at !== null && d.next_attempt_at.getTime() > asked + 500;
    }, "the retry put off by the project's cap");
    expect(rx.requests).toHaveLength(2);
    expect(await circuitOpen(s.id)).toBe(true);

    // The project has room again; the circuit would hold the delivery for ten minutes more.
    hang = false;
    for (const x of slow) await x.close();
    let last: unknown;
    await waitFor(async () => {
      const d = (await deliveriesOf(w, s.id)).find((x) => x.id === held.id)!;
      last = [d.status, d.attempts, d.next_attempt_at?.toISOString()];
      return d.status === 'succeeded';
    }, 'the retried delivery sent past the circuit', 30_000).catch((err: Error) => {
      throw new Error(`${err.message}; the delivery: ${JSON.stringify(last)}`);
    });
    expect(rx.requests.length).toBeGreaterThanOrEqual(3);
    expect(await w.db.query('SELECT id FROM webhook_deliveries WHERE manual')).toMatchObject({ rows: [] });
  }, 90_000);

  // A delivery with the pass on its row, reached by a message that does not carry it (a stale or
  // duplicate one, a replayed dead letter): the row's word counts.
  it.each([
    ['naming no subscription (claimed without admission)', 'bare'],
    ['naming its subscription, not manual (put off by the circuit at admission)', 'hinted'],
  ] as const)('a message %s still sends a manual delivery past the circuit', async (_what, how) => {
    const { w, t, s, up } = await failingUntilUp(2);
    await waitFor(async () => (await deliveriesOf(w, s.id)).every((d) => d.next_attempt_at !== null && d.next_attempt_at.getTime() > Date.now() + 60_000), 'both held back');
    up();
    const [held] = await deliveriesOf(w, s.id);
    // Manual and due, and marked enqueued: only the message below brings it to the dispatcher.
    await w.db.query('UPDATE webhook_deliveries SET manual = true, next_attempt_at = now(), enqueued_at = now() WHERE id = $1', [held.id]);
    if (how === 'bare') await w.broker.send(Queues.webhooksDue, [{ messageId: held.id, body: Buffer.from(JSON.stringify({ delivery_id: held.id })), headers: {} }]);
    else await enqueueDeliveries(w.broker, [{ id: held.id, subscriptionId: s.id, projectId: t.projectId }], Queues.webhooksDue);
    await waitFor(async () => (await deliveriesOf(w, s.id)).find((d) => d.id === held.id)?.status === 'succeeded', 'the manual delivery sent past the circuit', 30_000);
  }, 90_000);

  it('a test event goes at once, and one that fails leaves the circuit open and the deliveries held', async () => {
    const w = await startWorld(LONG);
    const t = await makeTenant(w);
    const rx = await startReceiver(() => 500);
    const s = await subscribe(w, t, { url: rx.url });
    await emit(w, t.projectId, 3);
    await openedOn(w, s.id, 3);
    const heldBack = async (except?: string) =>
      (await deliveriesOf(w, s.id)).filter((d) => d.id !== except).every((d) => d.status !== 'succeeded' && d.next_attempt_at !== null && d.next_attempt_at.getTime() > Date.now() + 60_000);
    await waitFor(() => heldBack(), 'the deliveries held back by the circuit or their retry');
    const test = await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/test`);
    expect(test.status).toBe(202);
    await waitFor(() => rx.requests.some((r) => JSON.parse(r.body).type === 'webhook.test'), 'the test event at the endpoint');
    await waitFor(async () => (await deliveriesOf(w, s.id)).find((d) => d.id === test.json.id && d.last_status_code === 500), 'the test delivery failed');
    expect(await circuitOpen(s.id)).toBe(true);
    expect(await heldBack(test.json.id)).toBe(true);
    expect(rx.requests).toHaveLength(2 + 1);
  }, 90_000);

  it('a test event that fails beside the half-open probe leaves the probe to answer: the circuit does not open again', async () => {
    const lines: Array<{ subscription_id?: string; circuit?: string }> = [];
    const logger = pino({ level: 'info' }, { write: (line: string) => void lines.push(JSON.parse(line)) });
    // Concurrency 8: two requests per endpoint, one for the probe, one for the test event.
    const w = await startWorld({ env: { ...LONG.env, WEBHOOK_CONCURRENCY: '8' }, worker: { logger, circuit: { failureThreshold: 2, cooldownMs: 300, maxCooldownMs: 600_000 } } });
    const t = await makeTenant(w);
    // Two failures open the circuit; after its 300 ms the probe goes, and hangs; the test event fails.
    let probing = false;
    const rx = await startReceiver(() => (probing ? 'hang' : 500));
    const s = await subscribe(w, t, { url: rx.url, timeout_seconds: 60 });
    const circuit = () => lines.filter((l) => l.subscription_id === s.id && l.circuit).map((l) => l.circuit);
    await emit(w, t.projectId, 2);
    await waitFor(() => circuit().length === 1, 'the circuit to open');
    probing = true;
    await emit(w, t.projectId, 1);
    await waitFor(() => rx.hanging() === 1, 'the half-open probe hanging at the endpoint', 30_000);
    probing = false;
    expect(circuit()).toEqual(['open', 'half_open']);
    const test = await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/test`);
    expect(test.status).toBe(202);
    await waitFor(async () => (await deliveriesOf(w, s.id)).find((d) => d.id === test.json.id && d.last_status_code === 500), 'the test delivery failed');
    // Before: taken as the probe's answer, it opened the circuit again with its cool-down doubled.
    expect(circuit()).toEqual(['open', 'half_open']);
  }, 90_000);
});

describe('a subscription turned off or deleted while its circuit is open', () => {
  it.each(['turned off', 'deleted'])('%s: its webhook_circuit_open series goes (it stayed 1 until a restart)', async (how) => {
    const w = await startWorld(LONG);
    const { t, s } = await brokenEndpoint(w, 3);
    const r = how === 'deleted' ? await api(w, t, 'DELETE', `/webhook-subscriptions/${s.id}`) : await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: false });
    expect(r.status).toBe(how === 'deleted' ? 204 : 200);
    await waitFor(async () => !(await circuitOpen(s.id)), 'the circuit forgotten');
    expect((await webhookCircuitOpen.get()).values.filter((v) => v.labels.subscription === s.id)).toEqual([]);
  }, 90_000);

  it('turned off with attempts still out: their timeouts do not open its circuit again', async () => {
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '8', WEBHOOK_RETRY_SCHEDULE: '10m,10m,10m' }, worker: LONG.worker });
    const t = await makeTenant(w);
    const rx = await startReceiver(() => 'hang');
    const s = await subscribe(w, t, { url: rx.url, timeout_seconds: 2 });
    await emit(w, t.projectId, 2);
    await waitFor(() => rx.hanging() === 2, 'two attempts hanging at the endpoint');
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { active: false })).status).toBe(200);
    // Both time out after the subscription was turned off, and are recorded: two failures, the
    // circuit's threshold — before, they opened it again, and nothing would close it.
    await waitFor(async () => (await w.db.query(`SELECT count(*)::int AS n FROM webhook_attempts a JOIN webhook_deliveries d ON d.id = a.delivery_id WHERE d.subscription_id = $1`, [s.id])).rows[0].n === 2, 'both attempts recorded', 30_000);
    expect(await circuitOpen(s.id)).toBe(false);
  }, 90_000);

  it('unheard (LISTEN down): it goes once LISTEN is back', async () => {
    const w = await startWorld({ env: LONG.env, worker: false });
    const listening = await startDeafenableWorker(w);
    const off = await brokenEndpoint(w, 2);
    const gone = await brokenEndpoint(w, 2);
    const kept = await brokenEndpoint(w, 2);
    listening.deafen();
    expect((await api(w, off.t, 'PATCH', `/webhook-subscriptions/${off.s.id}`, { active: false })).status).toBe(200);
    expect((await api(w, gone.t, 'DELETE', `/webhook-subscriptions/${gone.s.id}`)).status).toBe(204);
    expect(await circuitOpen(off.s.id)).toBe(true);
    expect(await circuitOpen(gone.s.id)).toBe(true);
    listening.resume();
    await waitFor(async () => !(await circuitOpen(off.s.id)) && !(await circuitOpen(gone.s.id)), 'both circuits forgotten');
    expect(await circuitOpen(kept.s.id)).toBe(true);
  }, 90_000);
});

describe('attempts to the old URL still out when the URL changes', () => {
  it('the waiting deliveries reach the new URL at once, not after the old URL\'s hanging attempt times out', async () => {
    // WEBHOOK_CONCURRENCY 4: one attempt per subscription in flight. Circuit as shipped.
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '4', WEBHOOK_RETRY_SCHEDULE: '10m,10m,10m' }, worker: { circuit: { ...DEFAULT_CIRCUIT_OPTIONS } } });
    const t = await makeTenant(w);
    const old = await startReceiver(() => 'hang');
    const fixed = await startReceiver(() => 200);
    // The old endpoint hangs; its attempts time out only after 40 s.
    const s = await subscribe(w, t, { url: old.url, timeout_seconds: 40 });
    await emit(w, t.projectId, 3);
    await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      return old.hanging() === 1 && rows.length === 3 && rows.filter((d) => d.status === 'sending').length === 1;
    }, 'one attempt hanging at the old URL, two deliveries waiting', 30_000);

    const moved = await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { url: fixed.url });
    expect(moved.status).toBe(200);
    const changedAt = Date.now();
    // The two that were waiting go to the new URL, which answers at once. Well within the old
    // attempt's 40 s.
    await waitFor(() => fixed.requests.length >= 2, 'the two waiting deliveries at the new URL', 15_000).catch((err) => {
      throw new Error(`${(err as Error).message}; new URL got ${fixed.requests.length} in ${Date.now() - changedAt} ms, old attempt still hanging: ${old.hanging() === 1}`);
    });
    expect(old.hanging()).toBe(1);
  }, 90_000);

  it("the old URL's attempts that time out after the change do not open the new URL's circuit", async () => {
    // WEBHOOK_CONCURRENCY 20: five attempts per subscription in flight; circuit as shipped (opens
    // after 5 consecutive failures, for 30 s).
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '20', WEBHOOK_RETRY_SCHEDULE: '10m,10m,10m' }, worker: { circuit: { ...DEFAULT_CIRCUIT_OPTIONS } } });
    const t = await makeTenant(w);
    const old = await startReceiver(() => 'hang');
    const fixed = await startReceiver(() => 200);
    const s = await subscribe(w, t, { url: old.url, timeout_seconds: 5 });
    const first = await emit(w, t.projectId, 5);
    await waitFor(() => old.hanging() === 5, 'five attempts hanging at the old URL', 30_000);

    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { url: fixed.url })).status).toBe(200);
    // The five old attempts time out (5 s) and are recorded.
    await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      return rows.length === 5 && rows.every((d) => d.status !== 'sending' && d.status !== 'pending') && old.hanging() === 0;
    }, 'the old attempts ended', 30_000);
    expect(first).toHaveLength(5);

    // The new URL has not failed once: its circuit must be closed, and a new event goes at once.
    expect(await circuitOpen(s.id)).toBe(false);
    const [later] = await emit(w, t.projectId, 1);
    await waitFor(() => fixed.requests.some((r) => r.headers['webhook-id'] === later.id), 'a new event at the new URL', 10_000);
  }, 90_000);

  it('a delivery whose attempt to the old URL ends after the change is tried at the new URL without the old back-off', async () => {
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '4', WEBHOOK_RETRY_SCHEDULE: '10m,10m,10m' }, worker: { circuit: { ...DEFAULT_CIRCUIT_OPTIONS } } });
    const t = await makeTenant(w);
    const old = await startReceiver(() => 'hang');
    const fixed = await startReceiver(() => 200);
    const s = await subscribe(w, t, { url: old.url, timeout_seconds: 5 });
    const [e] = await emit(w, t.projectId, 1);
    await waitFor(() => old.hanging() === 1, 'the attempt hanging at the old URL', 30_000);
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { url: fixed.url })).status).toBe(200);
    // Its first attempt (to the old URL) is spent, as the docs say; the next one should not wait
    // the ten minutes the old endpoint's failure schedules.
    await waitFor(() => fixed.requests.some((r) => r.headers['webhook-id'] === e.id), 'the delivery at the new URL', 20_000).catch(async (err) => {
      const [row] = await deliveriesOf(w, s.id);
      throw new Error(`${(err as Error).message}; the delivery is ${row.status}, attempts ${row.attempts}, next attempt in ${row.next_attempt_at ? Math.round((row.next_attempt_at.getTime() - Date.now()) / 1000) : '-'} s`);
    });
  }, 90_000);

  it('a 410 from the old URL after the change does not disable the subscription', async () => {
    const w = await startWorld({ env: { WEBHOOK_CONCURRENCY: '4', WEBHOOK_RETRY_SCHEDULE: '10m,10m,10m' }, worker: { circuit: { ...DEFAULT_CIRCUIT_OPTIONS } } });
    const t = await makeTenant(w);
    // The old endpoint holds its request until told, then answers 410 Gone.
    let answer!: () => void;
    const told = new Promise<void>((resolve) => (answer = resolve));
    let held = 0;
    const old = createServer((req, res) => {
      held++;
      req.resume();
      void told.then(() => res.writeHead(410).end('gone'));
    });
    await new Promise<void>((resolve) => old.listen(0, '127.0.0.1', resolve));
    onCleanup(() => new Promise<void>((resolve) => old.close(() => resolve())));
    const fixed = await startReceiver(() => 200);
    const s = await subscribe(w, t, { url: `http://127.0.0.1:${(old.address() as AddressInfo).port}/hook` });
    // One attempt in flight per endpoint: the second delivery waits behind the held one.
    const [e1, e2] = await emit(w, t.projectId, 2);
    await waitFor(() => held === 1, 'the attempt held at the old URL', 30_000);
    expect((await api(w, t, 'PATCH', `/webhook-subscriptions/${s.id}`, { url: fixed.url })).status).toBe(200);
    // The waiting one reaches the new URL while the old attempt is still out: the dispatcher has
    // heard of the change (the old attempt no longer holds the endpoint's one slot).
    await waitFor(() => fixed.requests.length === 1, 'the waiting delivery at the new URL', 20_000);
    const sentFirst = String(fixed.requests[0].headers['webhook-id']);
    expect([e1.id, e2.id]).toContain(sentFirst);
    answer();
    const heldId = sentFirst === e1.id ? e2.id : e1.id;
    await waitFor(() => fixed.requests.some((r) => r.headers['webhook-id'] === heldId), 'the held delivery at the new URL', 20_000);
    // The receiver has the request before the worker records its answer: wait for the record.
    // The 410 was recorded before that second attempt was claimed, so it is in by now too.
    await waitFor(async () => (await deliveriesOf(w, s.id)).every((d) => d.status === 'succeeded'), 'both deliveries recorded as succeeded', 20_000);
    const sub = await api(w, t, 'GET', `/webhook-subscriptions/${s.id}`);
    expect(sub.json.active).toBe(true);
    const rows = await deliveriesOf(w, s.id);
    expect(rows.map((d) => [d.event_id, d.status, d.attempts]).sort()).toEqual([[heldId, 'succeeded', 2], [sentFirst, 'succeeded', 1]].sort());
  }, 90_000);
});
