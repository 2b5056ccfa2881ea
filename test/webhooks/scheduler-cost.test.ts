// What a scheduler pass costs with a large backlog it must not take: 20,000 due deliveries held
// by a paused subscription and 20,000 new ones still on webhooks.outbound. A pass used to walk
// every waiting delivery and drop those in the join, every second in every worker; it now reads
// what it takes. Measured with EXPLAIN ANALYZE of the statements a pass sends (rolled back).
import { describe, expect, it } from 'vitest';
import { Queues } from '../../src/broker/topology.ts';
import type { Database } from '../../src/db/database.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { clearEnqueued, insertDeliveries } from '../../src/db/webhook-deliveries.sql.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { startScheduler } from '../../src/webhooks/scheduler.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup } from '../support/env.ts';
import { wrapDatabase } from '../support/wrapped-db.ts';
import { countingBroker } from './counting-broker.ts';

const SEED = 20_000;

type PlanNode = Record<string, unknown> & { Plans?: PlanNode[] };

/** Rows a plan read: what its scans returned and what they, and its joins, filtered out. */
function rowsRead(node: PlanNode): number {
  const n = (k: string) => Number(node[k] ?? 0);
  const loops = Math.max(1, n('Actual Loops'));
  let read = n('Rows Removed by Join Filter') * loops;
  if (String(node['Node Type']).includes('Scan')) read += (n('Actual Rows') + n('Rows Removed by Filter') + n('Rows Removed by Index Recheck')) * loops;
  return read + (node.Plans ?? []).reduce((sum, c) => sum + rowsRead(c), 0);
}

/** The rows each statement read, run again under EXPLAIN ANALYZE in a transaction rolled back. */
async function explainRead(db: Database, statements: ReadonlyArray<{ sql: string; params?: readonly unknown[] }>): Promise<Array<{ sql: string; read: number }>> {
  const out: Array<{ sql: string; read: number }> = [];
  const rollback = new Error('rollback');
  await db
    .transaction(async (tx) => {
      for (const s of statements) {
        const r = await tx.query(`EXPLAIN (ANALYZE, FORMAT JSON) ${s.sql}`, s.params);
        const raw = Object.values(r.rows[0])[0];
        const plan = (typeof raw === 'string' ? JSON.parse(raw) : raw) as Array<{ Plan: PlanNode }>;
        out.push({ sql: s.sql.replace(/\s+/g, ' ').slice(0, 80), read: rowsRead(plan[0].Plan) });
      }
      throw rollback;
    })
    .catch((err: unknown) => {
      if (err !== rollback) throw err;
    });
  return out;
}

describe('a webhook scheduler pass', () => {
  it('reads what it takes, not the deliveries a paused subscription holds or those on the queue', async () => {
    const { db: raw } = await makeTestDb();
    const projectId = uuidv7();
    const [active, paused, busy] = [uuidv7(), uuidv7(), uuidv7()];
    for (const [id, isPaused] of [[active, false], [paused, true], [busy, false]] as const) {
      await raw.query(
        `INSERT INTO webhook_subscriptions (id, project_id, url, events, secret, paused) VALUES ($1, $2, 'https://example.com/h', '{*}', 'sealed', $3)`,
        [id, projectId, isPaused],
      );
    }
    // A burst of new deliveries, marked enqueued as the fan-out writes them (their messages wait
    // on webhooks.outbound; none is needed here, no dispatcher runs).
    await withTransaction(
      raw,
      (tx) => insertDeliveries(tx, projectId, Array.from({ length: SEED }, () => ({ id: uuidv7(), subscriptionId: busy, eventId: uuidv7(), eventType: 'contact.created', body: '{}' }))),
      { projectId },
    );
    // What a paused subscription holds: due for a while, on no queue.
    const waiting = (subscription: string, n: number) =>
      raw.query(
        `INSERT INTO webhook_deliveries (id, project_id, subscription_id, event_id, event_type, body, status, attempts, next_attempt_at)
         SELECT gen_random_uuid(), $1, $2, gen_random_uuid(), 'contact.created', '{}', 'retrying', 1, now() - interval '1 minute' - make_interval(secs => i)
         FROM generate_series(1, $3::int) AS i`,
        [projectId, subscription, n],
      );
    await waiting(paused, SEED);
    // The ones to take, due later than all the held ones.
    await raw.query(
      `INSERT INTO webhook_deliveries (id, project_id, subscription_id, event_id, event_type, body, status, next_attempt_at)
       SELECT gen_random_uuid(), $1, $2, gen_random_uuid(), 'contact.created', '{}', 'pending', now() - make_interval(secs => i) FROM generate_series(1, 5) AS i`,
      [projectId, active],
    );
    await raw.exec('ANALYZE webhook_deliveries; ANALYZE webhook_subscriptions');
    const takeable = (await raw.query<{ id: string }>('SELECT id FROM webhook_deliveries WHERE subscription_id = $1', [active])).rows.map((r) => r.id);

    let recorded: Array<{ sql: string; params?: readonly unknown[] }> | undefined;
    const db = wrapDatabase(raw, {
      query: (sql, params) => {
        recorded?.push({ sql, params });
        return raw.query(sql, params);
      },
    });
    const inner = await makeTestBroker(defaultBrokerKind(), raw);
    await inner.declareQueues([{ name: Queues.webhooksDue }, { name: Queues.webhooksOutbound }]);
    const { broker, sent } = countingBroker(inner);
    // An hour's poll: the only passes are the one it starts with and the ones asked for.
    const s = startScheduler({ db, broker, logger: silentLogger, defaultMaxAttempts: 5, disableAfterDays: 3, pollMs: 3_600_000, disableCheckEveryMs: Number.MAX_SAFE_INTEGER });
    onCleanup(() => s.stop());

    await s.runOnce();
    expect([...sent(Queues.webhooksDue)].sort()).toEqual([...takeable].sort());

    recorded = [];
    await s.runOnce();
    const statements = recorded;
    recorded = undefined;
    expect(sent(Queues.webhooksDue)).toHaveLength(5); // nothing more to take
    const reads = await explainRead(raw, statements);
    const total = reads.reduce((sum, r) => sum + r.read, 0);
    // Before: the take alone read every waiting delivery (40,005) on every pass.
    expect(total, JSON.stringify(reads, null, 1)).toBeLessThan(500);

    // Nothing was lost on the way: the held deliveries are still waiting, the burst still marked.
    const state = await raw.query<{ subscription_id: string; status: string; marked: boolean; n: number }>(
      `SELECT subscription_id, status, enqueued_at IS NOT NULL AS marked, count(*)::int AS n FROM webhook_deliveries GROUP BY 1, 2, 3 ORDER BY 1, 2, 3`,
    );
    expect(state.rows).toEqual(
      [
        { subscription_id: active, status: 'pending', marked: true, n: 5 },
        { subscription_id: paused, status: 'retrying', marked: false, n: SEED },
        { subscription_id: busy, status: 'pending', marked: true, n: SEED },
      ].sort((a, b) => (a.subscription_id < b.subscription_id ? -1 : 1)),
    );

    // Resumed (what the API does in its transaction): every held delivery goes at the next pass.
    await raw.transaction(async (tx) => {
      await tx.query('UPDATE webhook_subscriptions SET paused = false WHERE id = $1', [paused]);
      await clearEnqueued(tx, { subscriptionId: paused });
    });
    await s.runOnce();
    expect(sent(Queues.webhooksDue)).toHaveLength(5 + SEED);
    expect(new Set(sent(Queues.webhooksDue)).size).toBe(5 + SEED);
  }, 120_000);
});
