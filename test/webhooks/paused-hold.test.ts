// Deliveries of a paused subscription: the scheduler holds them out of the index it walks (so a
// pass does not read them again and again), and a resume lets them go — also when the resume
// races the hold.
import { describe, expect, it } from 'vitest';
import { clearEnqueued } from '../../src/db/webhook-deliveries.sql.ts';
import { holdDeliveries, takeDue } from '../../src/db/webhook-dispatch.sql.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeTestDb, onServices, waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { api, emit, makeTenant, startWorld, subscribe, waitForDeliveries } from './webhook-harness.ts';

describe('deliveries of a paused subscription', () => {
  it('are held by the scheduler once their messages are gone, and sent on resume', async () => {
    const w = await startWorld({ worker: { enqueueGraceMs: 200 } });
    const t = await makeTenant(w);
    const rx = await startReceiver();
    const s = await subscribe(w, t, { url: rx.url });
    await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/pause`);
    await emit(w, t.projectId, 3);
    // The fan-out sends them, the dispatcher leaves them (paused); once the queues are seen empty
    // the scheduler takes their marks as lost, and holds them instead of sending them.
    await waitFor(
      async () =>
        (await w.db.query(`SELECT count(*)::int AS n FROM webhook_deliveries WHERE subscription_id = $1 AND status = 'pending' AND held AND enqueued_at IS NULL`, [s.id])).rows[0].n === 3,
      'three deliveries held',
    );
    expect(rx.requests).toHaveLength(0);
    await api(w, t, 'POST', `/webhook-subscriptions/${s.id}/resume`);
    const done = await waitForDeliveries(w, s.id, 3, 'succeeded');
    expect(done.every((d) => d.attempts === 1)).toBe(true);
    expect(rx.requests).toHaveLength(3);
  });

  async function pausedWithDue(n: number) {
    const { db } = await makeTestDb();
    const projectId = uuidv7();
    const subscriptionId = uuidv7();
    await db.query(`INSERT INTO webhook_subscriptions (id, project_id, url, events, secret, paused) VALUES ($1, $2, 'https://example.com/h', '{*}', 'sealed', true)`, [subscriptionId, projectId]);
    await db.query(
      `INSERT INTO webhook_deliveries (id, project_id, subscription_id, event_id, event_type, body, status, next_attempt_at)
       SELECT gen_random_uuid(), $1, $2, gen_random_uuid(), 'contact.created', '{}', 'pending', now() - interval '1 second' FROM generate_series(1, $3::int)`,
      [projectId, subscriptionId, n],
    );
    const held = async () => (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM webhook_deliveries WHERE subscription_id = $1 AND held', [subscriptionId])).rows[0].n;
    return { db, subscriptionId, held };
  }

  it('are not held when the subscription was resumed after the scheduler read it', async () => {
    const { db, subscriptionId, held } = await pausedWithDue(3);
    const { taken, paused } = await takeDue(db, { limit: 10 });
    expect(taken).toEqual([]);
    expect(paused).toHaveLength(3);
    await db.transaction(async (tx) => {
      await tx.query('UPDATE webhook_subscriptions SET paused = false WHERE id = $1', [subscriptionId]);
      await clearEnqueued(tx, { subscriptionId });
    });
    expect(await holdDeliveries(db, paused)).toBe(0);
    expect(await held()).toBe(0);
    expect((await takeDue(db, { limit: 10 })).taken).toHaveLength(3);
  });

  it.runIf(onServices)('are not held while a resume is in progress, and a hold that came first is undone by it', async () => {
    const { db, subscriptionId, held } = await pausedWithDue(3);
    const { paused } = await takeDue(db, { limit: 10 });
    // A resume under way: the hold skips the subscription it locks.
    await db.transaction(async (tx) => {
      await tx.query('UPDATE webhook_subscriptions SET paused = false WHERE id = $1', [subscriptionId]);
      expect(await holdDeliveries(db, paused)).toBe(0);
      await clearEnqueued(tx, { subscriptionId });
    });
    expect(await held()).toBe(0);
    // Paused again and held; the resume that follows lets them go.
    await db.query('UPDATE webhook_subscriptions SET paused = true WHERE id = $1', [subscriptionId]);
    expect(await holdDeliveries(db, paused)).toBe(3);
    await db.transaction(async (tx) => {
      await tx.query('UPDATE webhook_subscriptions SET paused = false WHERE id = $1', [subscriptionId]);
      await clearEnqueued(tx, { subscriptionId });
    });
    expect(await held()).toBe(0);
    expect((await takeDue(db, { limit: 10 })).taken).toHaveLength(3);
  });
});
