// LISTEN that does not give up. `Database.listen` fails when its connection cannot be made at that
// moment (PostgreSQL restarting, connection slots full); after a drop the adapter reconnects by
// itself, but a first failure is the caller's to retry. Every caller has a fallback that works
// without notifications (a poll, a short cache lifetime), only slower or costlier, so none should
// stay on it once the database is reachable again: this tries again, backing off, until it listens
// or is stopped.
import { errorText } from '../broker/broker.ts';
import type { Logger } from '../observability/logger.ts';
import type { Database } from './database.ts';

export type KeepListeningOptions = {
  logger: Logger;
  /** What the notifications are for, and what is done without them: for the log. */
  what: string;
  fallback: string;
  /** Between attempts: doubling from `min` to `max` (default 500 ms to 30 s). */
  retryMs?: { min: number; max: number };
  /**
   * Called when the connection is back after a drop, and when LISTEN succeeds after failing:
   * notifications sent meanwhile were missed.
   */
  onResume?: () => void;
};

/**
 * How long a cache fed by change notifications keeps an entry it loaded while they could not be
 * heard (LISTEN not made yet): nothing would drop it on a change.
 */
export const UNHEARD_CACHE_MS = 1_000;

export type Listening = {
  /** Settles after the first attempt: true if it listens, false if it failed (and retries go on). */
  readonly first: Promise<boolean>;
  /** Listening now (after a drop the adapter reconnects by itself, so this stays true). */
  readonly heard: boolean;
  /** Stops trying, and stops listening. */
  stop(): Promise<void>;
};

export function keepListening(db: Database, channel: string, onNotify: (payload: string) => void, o: KeepListeningOptions): Listening {
  const retry = o.retryMs ?? { min: 500, max: 30_000 };
  let stopped = false;
  let unlisten: (() => Promise<void>) | undefined;
  let timer: NodeJS.Timeout | undefined;
  let cutWait: (() => void) | undefined;
  let reportFirst!: (ok: boolean) => void;
  const first = new Promise<boolean>((resolve) => (reportFirst = resolve));

  // The adapter calls it from its reconnect, which has no logger: a failure is said here.
  const resumed = o.onResume && (() => {
    try {
      o.onResume!();
    } catch (err) {
      o.logger.warn({ channel, err: errorText(err) }, `catching up on ${o.what} missed while not listening failed`);
    }
  });
  const attempt = async (n: number): Promise<boolean> => {
    try {
      const u = await db.listen(channel, onNotify, resumed);
      if (stopped) {
        await u().catch(() => {});
        return true;
      }
      unlisten = u;
      if (n > 0) {
        o.logger.info({ channel, attempts: n + 1 }, `listening for ${o.what} again`);
        resumed?.();
      }
      return true;
    } catch (err) {
      // The first failure and every tenth: an outage should not flood the log.
      if (n % 10 === 0) o.logger.warn({ channel, attempts: n + 1, err: errorText(err) }, `cannot LISTEN for ${o.what}; ${o.fallback} until it can`);
      return false;
    }
  };

  const running = (async () => {
    for (let n = 0; !stopped; n++) {
      const ok = await attempt(n);
      if (n === 0) reportFirst(ok);
      if (ok || stopped) return; // stopped while the attempt ran: no back-off to sit out
      const delay = Math.min(retry.min * 2 ** Math.min(n, 20), retry.max);
      await new Promise<void>((resolve) => {
        if (stopped) return resolve();
        cutWait = resolve;
        timer = setTimeout(resolve, delay);
        timer.unref();
      });
    }
  })();

  return {
    first,
    get heard() {
      return unlisten !== undefined;
    },
    async stop() {
      stopped = true;
      clearTimeout(timer);
      cutWait?.();
      reportFirst(false); // if stopped before the first attempt ended
      await running;
      await unlisten?.().catch(() => {});
      unlisten = undefined;
    },
  };
}
