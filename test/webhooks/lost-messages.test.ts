// Deliveries marked enqueued: the scheduler must not put a backlog that is still on the queue
// there again (it used to, every grace — a minute — while the backlog lasted), and must still
// bring back a delivery whose message is gone. The grace is made short here; no dispatcher runs,
// so what is sent stays on its queue.
import { describe, expect, it } from 'vitest';
import { Queues } from '../../src/broker/topology.ts';
import type { Database } from '../../src/db/database.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { insertDeliveries } from '../../src/db/webhook-deliveries.sql.ts';
import { takeDue } from '../../src/db/webhook-dispatch.sql.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { enqueueDeliveries } from '../../src/webhooks/outbound-queue.ts';
import { startScheduler, type SchedulerOptions } from '../../src/webhooks/scheduler.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, waitFor } from '../support/env.ts';
import { countingBroker } from './counting-broker.ts';

const GRACE_MS = 200;

/** A fresh database with one active subscription, its broker (counted), and a scheduler starter. */
async function setUp() {
  const { db } = await makeTestDb();
  const projectId = uuidv7();
  const subscriptionId = uuidv7();
  await db.query(`INSERT INTO webhook_subscriptions (id, project_id, url, events, secret) VALUES ($1, $2, 'https://example.com/h', '{*}', 'sealed')`, [subscriptionId, projectId]);
  const inner = await makeTestBroker(defaultBrokerKind(), db);
  await inner.declareQueues([{ name: Queues.webhooksDue }, { name: Queues.webhooksOutbound }]);
  const { broker, sent } = countingBroker(inner);
  const depth = async (queue: string) => (await inner.stats([queue]))[0].depth;
  /** New deliveries as the fan-out makes them: marked enqueued in their insert, then (unless `send: false`) sent. */
  const fresh = async (n: number, o: { send?: boolean } = {}) => {
    const rows = await withTransaction(
      db,
      (tx) => insertDeliveries(tx, projectId, Array.from({ length: n }, () => ({ id: uuidv7(), subscriptionId, eventId: uuidv7(), eventType: 'contact.created', body: '{}' }))),
      { projectId },
    );
    if (o.send !== false) await enqueueDeliveries(inner, rows.map((r) => ({ ...r, projectId })));
    return rows.map((r) => r.id);
  };
  /** Deliveries due for a retry, on no queue. */
  const due = async (n: number) =>
    (
      await db.query<{ id: string }>(
        `INSERT INTO webhook_deliveries (id, project_id, subscription_id, event_id, event_type, body, status, attempts, next_attempt_at)
         SELECT gen_random_uuid(), $1, $2, gen_random_uuid(), 'contact.created', '{}', 'retrying', 1, now() - interval '1 second' FROM generate_series(1, $3::int)
         RETURNING id`,
        [projectId, subscriptionId, n],
      )
    ).rows.map((r) => r.id);
  const start = (o: Partial<SchedulerOptions> = {}) => {
    const s = startScheduler({ db, broker, logger: silentLogger, defaultMaxAttempts: 5, disableAfterDays: 3, pollMs: 50, enqueueGraceMs: GRACE_MS, disableCheckEveryMs: Number.MAX_SAFE_INTEGER, ...o });
    onCleanup(() => s.stop());
    return s;
  };
  return { db, sent, depth, fresh, due, start };
}

/** Until the database's clock is `ms` past the latest enqueue mark. */
async function markedLongerThan(db: Database, ms: number): Promise<void> {
  await waitFor(
    async () => (await db.query(`SELECT now() - max(enqueued_at) > $1::int * interval '1 millisecond' AS ok FROM webhook_deliveries`, [ms])).rows[0].ok,
    `the marks to be ${ms} ms old`,
  );
}

describe('webhook deliveries marked enqueued', () => {
  it('are not sent again while their messages wait on the queue, however long past the grace', async () => {
    const { db, sent, depth, fresh, due, start } = await setUp();
    // A burst of new deliveries waiting on webhooks.outbound, and retries the scheduler sends.
    await fresh(20);
    const retries = await due(20);
    const s = start();
    await waitFor(() => sent(Queues.webhooksDue).length >= 20, 'the retries sent to webhooks.due');
    await markedLongerThan(db, 5 * GRACE_MS);
    await s.runOnce();
    await s.runOnce();
    // Before: every mark older than the grace was sent again, at every pass.
    expect([...sent(Queues.webhooksDue)].sort()).toEqual([...retries].sort());
    expect(sent(Queues.webhooksOutbound)).toEqual([]);
    expect(await depth(Queues.webhooksDue)).toBe(20);
    expect(await depth(Queues.webhooksOutbound)).toBe(20);
  });

  it('come back after the grace when the scheduler that marked them stopped before sending, backlog or not', async () => {
    const { db, sent, fresh, due, start } = await setUp();
    await fresh(5); // a backlog on webhooks.outbound: the queues are not empty
    const [unsent] = await due(1);
    // A scheduler marks it (journalled until its send is confirmed) and stops before sending.
    await takeDue(db, { limit: 10 });
    const s = start();
    await waitFor(() => sent(Queues.webhooksDue).length >= 1, 'the unsent delivery sent');
    // Sent once: its message now waits on webhooks.due, its send confirmed.
    await markedLongerThan(db, 5 * GRACE_MS);
    await s.runOnce();
    expect(sent(Queues.webhooksDue)).toEqual([unsent]);
  });

  it('come back once the queues are seen empty when their message is gone (purged, or never sent after the commit)', async () => {
    const { db, sent, fresh, start } = await setUp();
    const [gone] = await fresh(1, { send: false });
    const s = start();
    await waitFor(() => sent(Queues.webhooksDue).length >= 1, 'the lost delivery sent again');
    await markedLongerThan(db, 5 * GRACE_MS);
    await s.runOnce();
    expect(sent(Queues.webhooksDue)).toEqual([gone]);
  });

  it('are sent again after maxQueuedMs even while the queues are never empty', async () => {
    const { sent, fresh, start } = await setUp();
    const [waiting] = await fresh(1);
    start({ maxQueuedMs: 1_000 });
    await waitFor(() => sent(Queues.webhooksDue).length >= 1, 'the backstop');
    expect(sent(Queues.webhooksDue)).toEqual([waiting]);
  });
});
