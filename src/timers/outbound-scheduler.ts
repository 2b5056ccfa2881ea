// Wakes senders for queued replies whose time has come: retries that fell due, messages the API
// could not hand to the queue, and wake-ups that were lost (a dead-lettered or dropped queue
// message). The schedule lives on the messages rows, so a retry due while every worker was down
// goes out when one starts. Several schedulers may run (one per worker): SKIP LOCKED shares rows.
import type { Database } from '../db/database.ts';
import { nextRetryAt, takeDueForQueue } from '../db/outbound.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { drainChunks } from './passes.ts';
import type { OutboundMessages } from '../services/outbound-messages.service.ts';

export type OutboundSchedulerOptions = {
  db: Database;
  outbound: Pick<OutboundMessages, 'enqueue'>;
  logger?: Logger;
  /** The longest pause between passes. */
  intervalMs?: number;
  /** A message never handed to the queue is picked up after this (the API hands it over at once). */
  graceMs?: number;
  /** A handed-over message still waiting after this is handed over again. */
  staleMs?: number;
  batchSize?: number;
};

export type OutboundScheduler = {
  readonly name: string;
  /** Runs a pass within `delayMs` (a sender scheduled a retry that soon). */
  wakeIn(delayMs: number): void;
  stop(): Promise<void>;
};

export function startOutboundScheduler(opts: OutboundSchedulerOptions): OutboundScheduler {
  const intervalMs = opts.intervalMs ?? 1000;
  const graceMs = opts.graceMs ?? 5000;
  const staleMs = opts.staleMs ?? 60_000;
  const batchSize = opts.batchSize ?? 500;
  const log = (opts.logger ?? silentLogger).child({ component: 'outbound-scheduler' });

  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let release: (() => void) | undefined;
  let wakeAt = Infinity;

  /** Sleeps until the earliest of: the interval, a requested wake-up, stop(). */
  const sleep = (ms: number) =>
    new Promise<void>((resolve) => {
      if (stopped) return resolve();
      wakeAt = Date.now() + ms;
      release = resolve;
      timer = setTimeout(resolve, ms);
    }).finally(() => {
      clearTimeout(timer);
      release = undefined;
      wakeAt = Infinity;
    });

  function wakeIn(delayMs: number): void {
    const at = Date.now() + delayMs;
    if (stopped || at >= wakeAt || !release) return;
    clearTimeout(timer);
    wakeAt = at;
    timer = setTimeout(release, Math.max(0, delayMs));
  }

  async function pass(): Promise<void> {
    await drainChunks(
      async (limit) => {
        const due = await withTransaction(opts.db, (tx) => takeDueForQueue(tx, { limit, graceMs, staleMs }));
        // Handed over after commit: a failure here leaves the rows marked, and the stale rule
        // hands them over again later.
        if (due.length) await opts.outbound.enqueue(due);
        return due.length;
      },
      batchSize,
      () => stopped,
    );
  }

  async function loop(): Promise<void> {
    let failures = 0;
    while (!stopped) {
      let next = intervalMs;
      try {
        await pass();
        const at = await nextRetryAt(opts.db);
        if (at) next = Math.min(next, Math.max(0, at.getTime() - Date.now()));
        failures = 0;
      } catch (err) {
        failures++;
        if (failures === 1 || failures % 10 === 0) log.warn({ err, failures }, 'outbound scheduling failed; retrying');
        next = Math.min(intervalMs * 2 ** Math.min(failures, 5), 30_000);
      }
      await sleep(next);
    }
  }

  const running = loop();
  return {
    name: 'outbound-scheduler',
    wakeIn,
    async stop() {
      stopped = true;
      release?.();
      await running;
    },
  };
}
