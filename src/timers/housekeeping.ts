// Housekeeping: deletes what has outlived its use, once an hour — login tokens expired for over a
// day, idempotency records past their 24 hours, finished webhook deliveries (succeeded or dead)
// with their attempts once WEBHOOK_RETENTION_DAYS have passed since their last change (and gives
// up, as dead, the deliveries a paused subscription has held that long), published
// events older than EVENT_RETENTION_DAYS (never one still owed to the broker), consumers'
// markers of events they applied that long ago, dead letters replayed that long ago (never one
// not replayed: nobody has dealt with it yet), and parse errors parked that long ago.
//
// Every worker process runs it; there is no leader. Each statement deletes a bounded chunk whose
// rows it locks with SKIP LOCKED, so a large backlog is worked off in many short transactions and
// concurrent passes in several processes split the rows instead of waiting on each other. A
// failure is logged and the next pass tries again: nothing here is urgent.
import type { Database } from '../db/database.ts';
import { pruneAuthTokens } from '../db/auth-tokens.sql.ts';
import { pruneIdempotencyKeys } from '../db/idempotency.sql.ts';
import { expireHeldDeliveries, pruneWebhookDeliveries } from '../db/webhook-deliveries.sql.ts';
import { pruneReplayedDeadLetters } from '../broker/dead-letters.sql.ts';
import { pruneParseErrors } from '../db/parse-errors.sql.ts';
import { webhookDeliveriesTotal } from '../observability/metrics.ts';
import { pruneEvents, pruneProcessedEvents } from '../outbox/outbox.sql.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { drainChunks, oneAtATime } from './passes.ts';
import { makeStoppableSleep } from './stoppable-sleep.ts';

export type HousekeepingOptions = {
  db: Database;
  /** Finished webhook deliveries are kept this long after their last change (WEBHOOK_RETENTION_DAYS). */
  webhookRetentionDays: number;
  /**
   * Published events are kept this long (EVENT_RETENTION_DAYS); so are consumers' markers of them,
   * dead letters after their last replay, and parse errors after they were parked.
   */
  eventRetentionDays: number;
  logger?: Logger;
  /** Pause between passes (default an hour). */
  intervalMs?: number;
  /**
   * Delay before the first pass. By default a random part of a minute, so workers started together
   * do not all sweep at once; a pass soon after start also covers processes restarted more often
   * than `intervalMs`.
   */
  firstRunAfterMs?: number;
  /** Rows deleted per statement (default 5,000; 1,000 on PGlite, whose one connection it holds). */
  batchSize?: number;
};

/**
 * Rows deleted by one pass, per table (attempts go with their deliveries); `heldDeliveries` are
 * those given up (made dead, not deleted) after a paused subscription held them too long.
 */
export type HousekeepingCounts = { authTokens: number; idempotencyKeys: number; heldDeliveries: number; webhookDeliveries: number; events: number; processedEvents: number; deadLetters: number; parseErrors: number };

export type HousekeepingResult = HousekeepingCounts & {
  /** The tasks that failed this pass (logged; their rows wait for the next pass). */
  failed: Array<keyof HousekeepingCounts>;
};

export type Housekeeping = {
  readonly name: string;
  /** Runs one pass now (after any pass in progress); never rejects. */
  runOnce(): Promise<HousekeepingResult>;
  stop(): Promise<void>;
};

export function startHousekeeping(opts: HousekeepingOptions): Housekeeping {
  const { db } = opts;
  const intervalMs = opts.intervalMs ?? 3_600_000;
  const firstRunAfterMs = opts.firstRunAfterMs ?? Math.round(Math.random() * 60_000);
  const batchSize = opts.batchSize ?? (db.kind === 'pglite' ? 1000 : 5000);
  const log = (opts.logger ?? silentLogger).child({ component: 'housekeeping' });

  const tasks: Record<keyof HousekeepingCounts, (limit: number) => Promise<number>> = {
    authTokens: (limit) => pruneAuthTokens(db, limit),
    idempotencyKeys: (limit) => pruneIdempotencyKeys(db, limit),
    heldDeliveries: async (limit) => {
      const n = await expireHeldDeliveries(db, opts.webhookRetentionDays, limit);
      if (n > 0) webhookDeliveriesTotal.inc({ result: 'dead' }, n);
      return n;
    },
    webhookDeliveries: (limit) => pruneWebhookDeliveries(db, opts.webhookRetentionDays, limit),
    events: (limit) => pruneEvents(db, opts.eventRetentionDays, limit),
    processedEvents: (limit) => pruneProcessedEvents(db, opts.eventRetentionDays, limit),
    // The event log's days: what a replay sent back was handled long since (or died again, which
    // writes a new row), and an event replayed that long ago is gone from the log already.
    deadLetters: (limit) => pruneReplayedDeadLetters(db, opts.eventRetentionDays, limit),
    // The same days from when they were parked, replayed or not.
    parseErrors: (limit) => pruneParseErrors(db, opts.eventRetentionDays, limit),
  };

  const rest = makeStoppableSleep();

  async function pass(): Promise<HousekeepingResult> {
    const started = Date.now();
    const result: HousekeepingResult = { authTokens: 0, idempotencyKeys: 0, heldDeliveries: 0, webhookDeliveries: 0, events: 0, processedEvents: 0, deadLetters: 0, parseErrors: 0, failed: [] };
    for (const [key, task] of Object.entries(tasks) as Array<[keyof HousekeepingCounts, (limit: number) => Promise<number>]>) {
      if (rest.stopped) break;
      try {
        result[key] = await drainChunks(task, batchSize, () => rest.stopped);
      } catch (err) {
        // Chunks deleted before the failure stay deleted; the rest waits for the next pass.
        result.failed.push(key);
        log.warn({ err, task: key }, 'housekeeping task failed; trying again next pass');
      }
    }
    if (result.authTokens + result.idempotencyKeys + result.heldDeliveries + result.webhookDeliveries + result.events + result.processedEvents + result.deadLetters + result.parseErrors > 0) {
      log.info(
        {
          auth_tokens: result.authTokens,
          idempotency_keys: result.idempotencyKeys,
          held_webhook_deliveries_given_up: result.heldDeliveries,
          webhook_deliveries: result.webhookDeliveries,
          events: result.events,
          processed_events: result.processedEvents,
          replayed_dead_letters: result.deadLetters,
          parse_errors: result.parseErrors,
          webhook_retention_days: opts.webhookRetentionDays,
          event_retention_days: opts.eventRetentionDays,
          duration_ms: Date.now() - started,
        },
        'housekeeping deleted expired rows',
      );
    }
    return result;
  }

  // runOnce from a test and the loop share one line of passes.
  const passes = oneAtATime(pass);
  const runOnce = passes.run;

  async function loop(): Promise<void> {
    await rest.sleep(firstRunAfterMs);
    while (!rest.stopped) {
      await runOnce();
      await rest.sleep(intervalMs);
    }
  }

  const running = loop().catch((err) => log.error({ err }, 'housekeeping stopped by an unexpected error'));

  return {
    name: 'housekeeping',
    runOnce,
    async stop() {
      rest.stop();
      await running;
      await passes.idle();
    },
  };
}
