// Endpoint health counters (success/failure counts, last success/failure, failing_since) are
// gathered in memory and written once a second per subscription, not with every attempt: at
// thousands of deliveries a second to one endpoint, updating its subscription row on each would
// serialise every dispatcher on that row's lock. A crash loses at most a second of counts —
// they are for people and for the disable-after-days rule, which works in days.
import type { Database } from '../db/database.ts';
import { addHealth, type HealthDelta } from '../db/webhook-subscriptions.sql.ts';
import type { Logger } from '../observability/logger.ts';

export type HealthRecorder = {
  success(subscriptionId: string, at: Date, statusCode: number): void;
  failure(subscriptionId: string, at: Date, statusCode: number | null, error: string): void;
  /** Writes what was gathered; also runs on a timer. */
  flush(): Promise<void>;
  stop(): Promise<void>;
};

export function makeHealthRecorder(opts: { db: Database; logger: Logger; everyMs?: number }): HealthRecorder {
  let pending = new Map<string, HealthDelta>();
  let flushing: Promise<void> | undefined;

  const entry = (id: string): HealthDelta => {
    let d = pending.get(id);
    if (!d) {
      d = { subscriptionId: id, successes: 0, failures: 0, lastSuccessAt: null, lastFailureAt: null, firstFailureAt: null, lastStatusCode: null, lastError: null };
      pending.set(id, d);
    }
    return d;
  };

  async function flushNow(): Promise<void> {
    if (pending.size === 0) return;
    const batch = [...pending.values()];
    pending = new Map();
    try {
      await addHealth(opts.db, batch);
    } catch (err) {
      // Put the counts back (merged with what arrived meanwhile) for the next flush.
      for (const d of batch) merge(entry(d.subscriptionId), d);
      opts.logger.warn({ err }, 'could not write webhook endpoint health; retrying at the next flush');
    }
  }

  const flush = (): Promise<void> => {
    flushing ??= flushNow().finally(() => (flushing = undefined));
    return flushing;
  };

  const timer = setInterval(() => void flush(), opts.everyMs ?? 1000);
  timer.unref();

  return {
    success(id, at, statusCode) {
      const d = entry(id);
      d.successes++;
      if (!d.lastSuccessAt || at > d.lastSuccessAt) d.lastSuccessAt = at;
      if (d.firstFailureAt && d.firstFailureAt < at) d.firstFailureAt = null;
      d.lastStatusCode = statusCode;
    },
    failure(id, at, statusCode, error) {
      const d = entry(id);
      d.failures++;
      if (!d.lastFailureAt || at > d.lastFailureAt) d.lastFailureAt = at;
      if (!d.firstFailureAt && (!d.lastSuccessAt || at > d.lastSuccessAt)) d.firstFailureAt = at;
      d.lastStatusCode = statusCode;
      d.lastError = error.slice(0, 1000);
    },
    flush,
    async stop() {
      clearInterval(timer);
      await flushing;
      await flushNow();
    },
  };
}

function merge(into: HealthDelta, d: HealthDelta): void {
  into.successes += d.successes;
  into.failures += d.failures;
  const later = (a: Date | null, b: Date | null) => (a && b ? (a > b ? a : b) : (a ?? b));
  into.lastSuccessAt = later(into.lastSuccessAt, d.lastSuccessAt);
  into.lastFailureAt = later(into.lastFailureAt, d.lastFailureAt);
  const firsts = [into.firstFailureAt, d.firstFailureAt].filter((x): x is Date => x !== null && (!into.lastSuccessAt || x > into.lastSuccessAt));
  into.firstFailureAt = firsts.length ? new Date(Math.min(...firsts.map((x) => x.getTime()))) : null;
  into.lastStatusCode ??= d.lastStatusCode;
  into.lastError ??= d.lastError;
}
