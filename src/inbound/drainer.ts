// Republishes webhooks the ingress spilled to `inbound_events` while the broker would not confirm.
// Rows go in spill order, each deleted only after the broker confirmed it; a send that fails hands
// its rows back and the drainer backs off. Several drainers (one per worker) share the table
// through leases. Polling is cheap here (an index scan on an almost always empty table) and keeps
// the drainer independent of which process did the spilling.
import type { Broker } from '../broker/broker.ts';
import { errorText } from '../broker/broker.ts';
import { Queues } from '../broker/topology.ts';
import type { Database } from '../db/database.ts';
import { claimSpilled, deleteSpilled, releaseSpilled } from '../db/inbound-events.sql.ts';
import { withDeadline } from '../deadline.ts';
import type { Logger } from '../observability/logger.ts';

export type DrainerOptions = {
  db: Database;
  broker: Broker;
  logger: Logger;
  /** Time between looks at an empty table. */
  pollMs?: number;
  batchSize?: number;
  /** Bodies per send, about (a send holds the rows that start below it): default 4 MiB. */
  maxBatchBytes?: number;
  /** Confirm deadline per batch. */
  sendTimeoutMs?: number;
  /** Longest wait after failures. */
  maxBackoffMs?: number;
};

export type Drainer = {
  /** Drains once, now; resolves with the number of rows republished. */
  drainNow(): Promise<number>;
  stop(): Promise<void>;
};

export function startSpillDrainer(opts: DrainerOptions): Drainer & { name: string } {
  const { db, broker, logger } = opts;
  const pollMs = opts.pollMs ?? 1000;
  const batchSize = opts.batchSize ?? 200;
  const sendTimeoutMs = opts.sendTimeoutMs ?? 5000;
  const maxBackoff = opts.maxBackoffMs ?? 5_000;
  // A lease outlives the send deadline, so a slow send is never claimed twice at once.
  const leaseMs = sendTimeoutMs * 2 + 2000;
  let stopped = false;
  let failures = 0;
  let timer: NodeJS.Timeout | undefined;
  let running: Promise<number> | undefined;

  async function drainOnce(): Promise<number> {
    let total = 0;
    while (!stopped) {
      const rows = await claimSpilled(db, batchSize, leaseMs, opts.maxBatchBytes);
      if (rows.length === 0) break;
      const ids = rows.map((r) => r.id);
      try {
        // Our own deadline too: a send that never settles must not stall draining for good.
        await withDeadline(
          broker.send(Queues.inboundRaw, rows.map((r) => ({ messageId: r.id, body: r.body, headers: r.headers })), { timeoutMs: sendTimeoutMs }),
          sendTimeoutMs + 1000,
          'broker did not confirm the republished webhooks in time',
        );
      } catch (err) {
        await releaseSpilled(db, ids).catch(() => {}); // else the lease returns them later
        throw err;
      }
      await deleteSpilled(db, ids);
      total += rows.length;
    }
    if (total) logger.info({ republished: total }, 'spilled webhooks republished');
    return total;
  }

  const drainNow = (): Promise<number> => (running ??= drainOnce().finally(() => (running = undefined)));

  function schedule(ms: number): void {
    if (stopped) return;
    timer = setTimeout(tick, ms);
    timer.unref();
  }

  async function tick(): Promise<void> {
    try {
      await drainNow();
      failures = 0;
      schedule(pollMs);
    } catch (err) {
      failures++;
      const wait = Math.min(maxBackoff, pollMs * 2 ** Math.min(failures, 10));
      logger.warn({ err: errorText(err), retry_in_ms: wait }, 'republishing spilled webhooks failed; backing off');
      schedule(wait);
    }
  }

  schedule(0);
  return {
    name: 'inbound-spill-drainer',
    drainNow,
    async stop() {
      stopped = true;
      clearTimeout(timer);
      await running?.catch(() => {});
    },
  };
}
