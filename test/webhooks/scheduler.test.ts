// The scheduler's runOnce() from a caller that just made rows due: it must not resolve with a pass
// that was already running (that pass may have read before the caller's change), but after one
// that started after the call.
import { describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { startScheduler } from '../../src/webhooks/scheduler.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, waitFor } from '../support/env.ts';

const { db } = await makeTestDb();
const broker = await makeTestBroker(defaultBrokerKind(), db);

/**
 * The database, with each pass's two statements logged, the first pass held at its start (until
 * `release`), and the most passes ever in progress at once.
 */
function held(inner: Database) {
  const log: string[] = [];
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let passes = 0;
  let inProgress = 0;
  let mostAtOnce = 0;
  const kind = (sql: string) => (/status = 'sending' AND d\.locked_until < now\(\)/.test(sql) ? 'reclaim' : /SET enqueued_at = now\(\)(, published_at = NULL)? FROM due/.test(sql) ? 'take' : undefined);
  const proxy = new Proxy(inner, {
    get(target, prop) {
      if (prop === 'query') {
        return async (sql: string, params?: readonly unknown[]) => {
          const k = kind(sql);
          if (k === 'reclaim') {
            mostAtOnce = Math.max(mostAtOnce, ++inProgress);
            if (++passes === 1) await gate;
          }
          try {
            return await target.query(sql, params);
          } finally {
            if (k) log.push(`${k} done`);
            if (k === 'take') inProgress--; // the pass's last statement (nothing is due here)
          }
        };
      }
      const v = Reflect.get(target, prop);
      return typeof v === 'function' ? v.bind(target) : v;
    },
  });
  return { db: proxy, log, release, passes: () => passes, mostAtOnce: () => mostAtOnce };
}

/** A scheduler on the held database, its first pass started and held. */
async function startHeld() {
  const h = held(db);
  // An hour's poll: the only passes are the one it starts with and the ones asked for.
  const s = startScheduler({ db: h.db, broker, logger: silentLogger, defaultMaxAttempts: 5, disableAfterDays: 3, pollMs: 3_600_000, disableCheckEveryMs: Number.MAX_SAFE_INTEGER });
  onCleanup(async () => {
    h.release(); // a test that failed early must not leave stop() waiting on the held pass
    await s.stop();
  });
  await waitFor(() => h.passes() === 1, 'the first pass to start');
  return { h, s };
}

describe('webhook scheduler runOnce', () => {
  it('resolves after a pass that started after the call, not with the one already running', async () => {
    const { h, s } = await startHeld();

    const asked = [s.runOnce(), s.runOnce()]; // two callers while it runs share the next pass
    h.release();
    await Promise.all(asked);
    expect(h.log).toEqual(['reclaim done', 'take done', 'reclaim done', 'take done']);
    expect(h.passes()).toBe(2);
    expect(h.mostAtOnce()).toBe(1);

    // Nothing running: a call runs a pass of its own.
    await s.runOnce();
    expect(h.passes()).toBe(3);
    expect(h.log).toHaveLength(6);
    expect(h.mostAtOnce()).toBe(1);
  });

  it('starts no more passes once stopped, and stop waits for the running one', async () => {
    const { h, s } = await startHeld();
    const asked = s.runOnce();
    const stopped = s.stop();
    h.release();
    await stopped;
    await asked;
    expect(h.log).toEqual(['reclaim done', 'take done']);
    await s.runOnce(); // after stop: nothing
    expect(h.passes()).toBe(1);
  });
});
