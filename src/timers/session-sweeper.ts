// The inactivity sweeper: ends every active session whose due time (last activity + timeout, kept
// by the inbound transaction) has passed, and emits its session.ended.
//
// The timer is a column, not a process: due times live in `sessions.due_at`, so nothing is lost
// when every process stops — the first sweeper to start ends what fell due meanwhile (dated at its
// due time). Each pass claims due rows with FOR UPDATE SKIP LOCKED and ends them in one
// transaction with their events, so any number of sweepers (one per worker process) share the
// work and never end a session twice. A pass every second keeps closing accurate to about a second;
// the query it runs when nothing is due is one probe of the partial index on due_at.
import type { Database } from '../db/database.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { makeSessionLifecycle } from '../services/session-lifecycle.service.ts';
import { drainChunks, oneAtATime } from './passes.ts';
import { makeStoppableSleep } from './stoppable-sleep.ts';

export type SweeperOptions = {
  db: Database;
  logger?: Logger;
  /** Pause between passes when nothing more is due. */
  intervalMs?: number;
  /** Sessions ended per transaction. */
  batchSize?: number;
  /** The sweeper's clock (tests move it); by default the database's now(). */
  now?: () => Date;
};

export type SessionSweeper = {
  readonly name: string;
  /** Runs passes right away until nothing is due; resolves with the number of sessions ended. */
  sweepNow(): Promise<number>;
  stop(): Promise<void>;
};

export function startSessionSweeper(opts: SweeperOptions): SessionSweeper {
  const intervalMs = opts.intervalMs ?? 1000;
  const batchSize = opts.batchSize ?? 200;
  const log = (opts.logger ?? silentLogger).child({ component: 'session-sweeper' });
  const lifecycle = makeSessionLifecycle({ db: opts.db, now: opts.now });

  const rest = makeStoppableSleep();

  const endDue = async (limit: number) => {
    const ended = await lifecycle.endDue(limit);
    if (ended.length > 0) log.info({ ended: ended.length }, 'sessions ended by inactivity');
    return ended.length;
  };
  // sweepNow from a test and the loop share one line of passes.
  const passes = oneAtATime(() => drainChunks(endDue, batchSize, () => rest.stopped));
  const sweepNow = passes.run;

  async function loop(): Promise<void> {
    let failures = 0;
    while (!rest.stopped) {
      try {
        await sweepNow();
        failures = 0;
        await rest.sleep(intervalMs);
      } catch (err) {
        failures++;
        // The database went away or a statement failed: due rows stay due and the next pass, after
        // a growing pause, takes them. Logged on the first failure and every tenth after.
        if (failures === 1 || failures % 10 === 0) log.warn({ err, failures }, 'session sweep failed; retrying');
        await rest.sleep(Math.min(intervalMs * 2 ** Math.min(failures, 5), 30_000));
      }
    }
  }

  const running = loop();

  return {
    name: 'session-sweeper',
    sweepNow,
    async stop() {
      rest.stop();
      await running;
      await passes.idle();
    },
  };
}
