// A manual retry or a test event goes past an open circuit. The row keeps that pass (`manual`,
// migration 039) until the delivery's next attempt is recorded or taken back after its lease, so
// a delivery a cap or the rate limit puts off comes back from the scheduler with it. Here the
// row's life, statement by statement, with no worker running; endpoint-change.e2e.test.ts has a
// retry put off by its project's cap and then sent past the still open circuit.
import { describe, expect, it } from 'vitest';
import { clearEnqueued, insertDeliveries } from '../../src/db/webhook-deliveries.sql.ts';
import { claimDeliveries, holdDeliveries, postponeDeliveries, reclaimExpired, recordAttempts, takeDue, unclaimDelivery, type ClaimedDelivery } from '../../src/db/webhook-dispatch.sql.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { cleanUpAfterEachTest } from '../support/env.ts';
import { api, makeTenant, startWorld, subscribe, type TestTenant, type World } from './webhook-harness.ts';

cleanUpAfterEachTest();

const manualOf = async (w: World, id: string) => (await w.db.query<{ manual: boolean }>('SELECT manual FROM webhook_deliveries WHERE id = $1', [id])).rows[0]?.manual;

/** What the scheduler takes of `id` (its mark cleared first, as a refused send does). */
async function taken(w: World, id: string) {
  await clearEnqueued(w.db, { ids: [id] });
  const { taken: rows } = await takeDue(w.db, { limit: 100 });
  return rows.find((r) => r.id === id);
}

async function claim(w: World, id: string): Promise<ClaimedDelivery> {
  const [c] = await claimDeliveries(w.db, [id], { defaultTimeoutMs: 5000, leaseMarginMs: 1000 });
  expect(c?.id).toBe(id);
  return c;
}

const failed = (c: ClaimedDelivery, t: TestTenant) => ({
  deliveryId: c.id,
  projectId: t.projectId,
  n: c.attempts,
  at: new Date(),
  statusCode: 500,
  durationMs: 3,
  errorClass: 'server_error',
  error: 'HTTP 500',
  responseExcerpt: null,
  next: { status: 'retrying' as const, at: new Date() },
});

describe("a manual delivery's pass, kept on its row", () => {
  it('a test event: kept through a postponement and a claim given back, on what the scheduler takes; gone once its attempt is recorded', async () => {
    const w = await startWorld({ worker: false });
    const t = await makeTenant(w);
    const s = await subscribe(w, t, { url: 'http://127.0.0.1:9/hook' });
    const test = await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/test`);
    expect(test.status).toBe(202);
    const id: string = test.json.id;
    expect(await manualOf(w, id)).toBe(true);

    // Put off (a cap, the rate limit), then due again: the scheduler's message says manual.
    await postponeDeliveries(w.db, [{ id, until: new Date(Date.now() - 1) }]);
    expect(await taken(w, id)).toMatchObject({ id, subscriptionId: s.id, manual: true });
    // Claimed, then given back (the rate limit learnt at the claim): still manual.
    let c = await claim(w, id);
    expect(c.manual).toBe(true);
    await unclaimDelivery(w.db, id, c.attempts, new Date(Date.now() - 1));
    expect(await taken(w, id)).toMatchObject({ manual: true });
    c = await claim(w, id);
    await recordAttempts(w.db, [failed(c, t)]);
    expect(await manualOf(w, id)).toBe(false);
    expect(await taken(w, id)).toMatchObject({ manual: false });
  });

  it('a manual retry: kept until the lease of its attempt is taken back; a recover and a new delivery are not manual', async () => {
    const w = await startWorld({ worker: false });
    const t = await makeTenant(w);
    const s = await subscribe(w, t, { url: 'http://127.0.0.1:9/hook' });
    // A delivery as the fan-out writes it (no fan-out runs here).
    const [d] = await insertDeliveries(w.db, t.projectId, [{ id: uuidv7(), subscriptionId: s.id, eventId: uuidv7(), eventType: 'contact.created', body: '{}' }]);
    expect(await manualOf(w, d.id)).toBe(false);
    expect(await taken(w, d.id)).toMatchObject({ manual: false });

    const c = await claim(w, d.id);
    expect(c.manual).toBe(false);
    await recordAttempts(w.db, [failed(c, t)]);
    expect((await api(w, t, 'POST', `/webhook-deliveries/${d.id}/retry`)).status).toBe(202);
    expect(await manualOf(w, d.id)).toBe(true);
    expect(await taken(w, d.id)).toMatchObject({ manual: true });
    const again = await claim(w, d.id);
    expect(again.manual).toBe(true);
    // Its dispatcher died mid-attempt: the attempt counts (interrupted), and so does the pass.
    await w.db.query(`UPDATE webhook_deliveries SET locked_until = now() - interval '1 second' WHERE id = $1`, [d.id]);
    expect((await reclaimExpired(w.db, { limit: 10, defaultMaxAttempts: 5 })).map((r) => r.id)).toEqual([d.id]);
    expect(await manualOf(w, d.id)).toBe(false);

    // Dead, retried by hand (manual), then recovered instead: the recover's sends wait as others do.
    await w.db.query(`UPDATE webhook_deliveries SET status = 'dead', next_attempt_at = NULL WHERE id = $1`, [d.id]);
    expect((await api(w, t, 'POST', `/webhook-deliveries/${d.id}/retry`)).status).toBe(202);
    expect(await manualOf(w, d.id)).toBe(true);
    await w.db.query(`UPDATE webhook_deliveries SET status = 'dead', next_attempt_at = NULL WHERE id = $1`, [d.id]);
    const recovered = await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/recover`, { since: new Date(Date.now() - 3_600_000).toISOString() });
    expect(recovered.status).toBe(202);
    expect(await manualOf(w, d.id)).toBe(false);
  });

  it('a claim that finds its subscription disabled drops the pass with the delivery', async () => {
    const w = await startWorld({ worker: false });
    const t = await makeTenant(w);
    const s = await subscribe(w, t, { url: 'http://127.0.0.1:9/hook' });
    const test = await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/test`);
    await w.db.query('UPDATE webhook_subscriptions SET active = false WHERE id = $1', [s.id]);
    const [c] = await claimDeliveries(w.db, [test.json.id], { defaultTimeoutMs: 5000, leaseMarginMs: 1000 });
    expect(c).toMatchObject({ status: 'dead', manual: false });
    expect(await manualOf(w, test.json.id)).toBe(false);
  });

  it('a delivery held while its subscription is paused drops the pass: sent on the resume, it waits as the others do', async () => {
    const w = await startWorld({ worker: false });
    const t = await makeTenant(w);
    const s = await subscribe(w, t, { url: 'http://127.0.0.1:9/hook' });
    const test = await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/test`);
    expect(await manualOf(w, test.json.id)).toBe(true);
    await w.db.query('UPDATE webhook_subscriptions SET paused = true WHERE id = $1', [s.id]);
    await clearEnqueued(w.db, { ids: [test.json.id] });
    const { paused } = await takeDue(w.db, { limit: 100 });
    expect(paused).toEqual([test.json.id]);
    expect(await holdDeliveries(w.db, paused)).toBe(1);
    expect(await manualOf(w, test.json.id)).toBe(false);
  });
});
