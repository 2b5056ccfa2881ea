// The outbox relay: moves committed outbox rows to the `domain.events` exchange, oldest first, at
// least once, and marks them published (they then form the event log).
//
// How a batch is claimed, and why it is correct on every adapter pair. Three modes, one rule:
// rows are claimed oldest first, published in seq order, and marked published only after the
// broker has them; until then they stay unpublished and are claimed again.
//
// - "locked" (PostgreSQL, broker outside the database — RabbitMQ): one transaction per batch.
//   `SELECT … ORDER BY seq LIMIT n FOR UPDATE SKIP LOCKED` locks the oldest rows no other relay
//   holds, the batch is published with confirms (under a deadline) while the locks are held, the
//   rows are marked in the same transaction, commit. Any number of relays, in any number of
//   processes, never publish one row concurrently, and no lease column or clock is needed. A relay
//   that dies before COMMIT rolls back: locks go, rows come back, and the events are published a
//   second time if the first publish got through — consumers are idempotent (idempotent.ts).
// - "in-transaction" (a broker whose queues live in this database and that offers
//   `publishInTransaction(tx, …)`): the same transaction, but the queue rows are inserted through
//   it, so "publish + mark" is atomic and the relay never publishes an event twice. This is also
//   what PGlite needs: it is one connection, and a publish going through `db` while the relay
//   holds a transaction would wait for that transaction forever.
// - "in-process" (PGlite and a broker without publishInTransaction): claim, publish and mark are
//   separate statements, so no transaction is held while the broker works; the rows a relay is
//   publishing are skipped by the others' claims through in-process bookkeeping (PGlite has one
//   process; see in-process-claims.ts). A crash between publish and mark republishes.
//
// Failure: the claim is abandoned (rows stay unpublished, in place), the attempt is recorded on
// the rows, and the relay backs off (100 ms doubling to 5 s) before claiming again from the
// oldest row — so nothing is skipped, and the first batch after a failure goes alone. Order is
// not strict across batches: with two batches in flight (RabbitMQ) the second may be confirmed
// while the first fails and is published again later; several relays drain concurrently too.
// Consumers must not rely on order between events (their ids and times let them sort).
import type { Broker, Headers, OutgoingMessage } from '../broker/broker.ts';
import { PROJECT_HEADER, errorText } from '../broker/broker.ts';
import type { Database, Queryable } from '../db/database.ts';
import { withDeadline } from '../deadline.ts';
import { keepListening } from '../db/keep-listening.ts';
import { withTransaction } from '../db/transaction.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { outboxPending, outboxPublishLag } from '../observability/metrics.ts';
import { eventMessageBody } from './idempotent.ts';
import { inProcessClaims } from './in-process-claims.ts';
import { uuidv7 } from '../domain/ids.ts';
import {
  claimUnpublished, countPending, markPublished, markPublishFailed, registerSleeper, unregisterSleeper, writersBarrier, type OutboxRow,
} from './outbox.sql.ts';

/** The NOTIFY channel the outbox insert trigger signals (migrations 002 and 011). */
export const OUTBOX_CHANNEL = 'ventros_outbox';

/**
 * Optional broker capability: publish through the caller's transaction. Only a broker backed by
 * the same database can offer it. (Proposed for the Broker port; see the header comment.)
 */
export type TransactionalPublish = {
  publishInTransaction(tx: Queryable, routingKey: string, msgs: readonly OutgoingMessage[]): Promise<void>;
};

export function canPublishInTransaction(b: Broker): b is Broker & TransactionalPublish {
  return typeof (b as Partial<TransactionalPublish>).publishInTransaction === 'function';
}

export type RelayOptions = {
  db: Database;
  broker: Broker;
  /** Safety-net poll (OUTBOX_POLL_MS); NOTIFY at commit wakes a sleeping relay. */
  pollMs: number;
  /**
   * Poll interval for `lingerMs` after the last batch that found work. While events are flowing
   * the relay does not rely on a notification per commit (see the note at `loop`).
   */
  activePollMs?: number;
  lingerMs?: number;
  /** Wait after a batch smaller than `batchSize` before claiming again (default 5 ms). */
  partialPauseMs?: number;
  /** Rows claimed and published per transaction. */
  batchSize?: number;
  /**
   * Locked mode: batches whose confirms may be awaited at once. The next batch is claimed and sent
   * while earlier ones wait for the broker, so an event committed meanwhile does not wait for a
   * whole confirm round trip before it is even claimed. Claims and sends stay one at a time.
   */
  pipelineDepth?: number;
  /** Deadline for one broker publish (confirms) while rows are locked. */
  publishTimeoutMs?: number;
  /** At stop, how long the relay goes on publishing what is already committed (default 5 s). */
  stopDrainMs?: number;
  backoffMs?: { min: number; max: number };
  logger?: Logger;
};

export type Relay = {
  readonly mode: RelayMode;
  /**
   * Finishes the batches in flight (bounded by the publish deadline), publishes what is committed
   * by then (for at most `stopDrainMs`), then stops. Given the shutdown's deadline (epoch ms), it
   * returns about STOP_GRACE_MS after it at the latest (a batch still out then may yet commit or
   * fail on its own): the relay outlasts the consumers, and what it has not published by then
   * stays in the outbox for the next relay. Called again, it answers when the first call does.
   */
  stop(deadline?: number): Promise<void>;
  /** Claims right away instead of at the next NOTIFY or poll. */
  wake(): void;
  /** Settles once the relay listens for commit notifications, or its first try failed (it polls
   * meanwhile and keeps trying). */
  readonly ready: Promise<void>;
};

/**
 * How far past the shutdown's deadline a stopping relay may go on: it starts once the consumers
 * have stopped (by the deadline), and the CLI forces the exit 5 s after it.
 */
export const STOP_GRACE_MS = 2000;
/** What a stop given a deadline waits at least, for each of its two steps, the grace spent or not. */
const STOP_FLOOR_MS = 100;
/** A drain at stop with less time left than this is not begun (its first batch would be cut off). */
const MIN_STOP_DRAIN_MS = 250;
const PENDING_REFRESH_MS = 1000;
/**
 * While publishing fails: the count is a scan of the whole backlog, which only grows meanwhile, and
 * every relay would run it in each back-off round.
 */
const PENDING_REFRESH_FAILING_MS = 10_000;
/** A sleeping relay refreshes its registration this often (others drop ones older than 5 min). */
const REGISTRATION_REFRESH_MS = 60_000;

export type RelayMode = 'locked' | 'in-transaction' | 'in-process';

function projectHeader(projectId: string | null): Headers {
  return projectId ? { [PROJECT_HEADER]: projectId } : {};
}

export function startRelay(opts: RelayOptions): Relay {
  const { db, broker, pollMs } = opts;
  const activePollMs = Math.min(opts.activePollMs ?? 10, pollMs);
  const lingerMs = opts.lingerMs ?? 2000;
  const partialPauseMs = Math.min(opts.partialPauseMs ?? 5, activePollMs);
  const batchSize = opts.batchSize ?? 500;
  const publishTimeoutMs = opts.publishTimeoutMs ?? 10_000;
  const stopDrainMs = opts.stopDrainMs ?? 5000;
  const backoff = opts.backoffMs ?? { min: 100, max: 5000 };
  const log = (opts.logger ?? silentLogger).child({ component: 'outbox-relay' });
  const inTx = canPublishInTransaction(broker) ? broker : undefined;
  const mode: RelayMode = inTx ? 'in-transaction' : db.kind === 'pglite' ? 'in-process' : 'locked';
  // Pipelining needs publishes that reach the broker in call order (RabbitMQ: one confirm channel);
  // a database-backed publish through a pool does not, so it sends one batch at a time.
  const pipelineDepth = mode === 'locked' && broker.kind === 'rabbitmq' ? Math.max(1, opts.pipelineDepth ?? 2) : 1;

  let stopped = false;
  let stopping: Promise<void> | undefined;
  /** Epoch ms by which a stop given a deadline ends (STOP_GRACE_MS past it). */
  let stopBy: number | undefined;
  /** Of the stop's time (none: unbounded). */
  const msLeft = () => (stopBy === undefined ? Infinity : Math.max(0, stopBy - Date.now()));
  let woken = false;
  let interrupt: (() => void) | undefined;
  const wake = () => {
    woken = true;
    interrupt?.();
  };
  /** Waits `ms`, or less when woken (if `wakeable`) or stopped. */
  const pause = (ms: number, wakeable: boolean) =>
    new Promise<void>((resolve) => {
      if (stopped || (wakeable && woken)) return resolve();
      const timer = setTimeout(done, ms);
      function done() {
        clearTimeout(timer);
        interrupt = undefined;
        resolve();
      }
      // During a back-off only stop() cuts the wait short: commits keep notifying while the broker
      // is down, and waking on each would turn the back-off into a busy loop.
      interrupt = () => {
        if (stopped || wakeable) done();
      };
    });

  // Back after a drop: commits announced meanwhile were missed, so look now rather than at the poll.
  const listening = keepListening(db, OUTBOX_CHANNEL, wake, { logger: log, what: 'outbox commits', fallback: 'relying on the poll', onResume: wake });

  async function publish(tx: Queryable | undefined, rows: OutboxRow[]): Promise<void> {
    // The port publishes one routing key per call, so consecutive rows of the same type go
    // together and runs are published one after another: seq order holds within the batch.
    const runs: Array<{ type: string; msgs: OutgoingMessage[] }> = [];
    for (let i = 0; i < rows.length; ) {
      const type = rows[i].envelope.type;
      let j = i;
      while (j < rows.length && rows[j].envelope.type === type) j++;
      const msgs: OutgoingMessage[] = rows.slice(i, j).map(({ envelope: e }) => ({
        messageId: e.id,
        body: eventMessageBody(e),
        headers: projectHeader(e.project_id),
      }));
      runs.push({ type, msgs });
      i = j;
    }
    if (broker.kind === 'rabbitmq' && !inTx) {
      // One confirm channel: every run is queued for the wire, in call order, as soon as publish()
      // is called, so all runs go out together and their confirms are awaited together. The deadline
      // bounds how long a network broker can keep rows locked.
      const all = Promise.all(runs.map((r) => broker.publish(r.type, r.msgs)));
      await withDeadline(all, publishTimeoutMs, `broker did not confirm ${rows.length} events within ${publishTimeoutMs} ms`);
      return;
    }
    for (const r of runs) {
      if (inTx && tx) await inTx.publishInTransaction(tx, r.type, r.msgs);
      // A database-backed publish is only queued behind other statements: giving up on it would
      // just publish twice, so it has no deadline.
      else await broker.publish(r.type, r.msgs);
    }
  }

  const local = mode === 'in-process' ? inProcessClaims(db) : undefined;

  /**
   * One claim → publish → mark. Resolves with the batch's size `n` once it is sent (locked mode,
   * so the next batch can be claimed meanwhile) or finished (the other modes); `done` settles
   * when it is confirmed, marked and committed (with the rows published), or rejects when not.
   */
  async function startBatch(): Promise<{ n: number; done: Promise<number> }> {
    let claimed: number[] = [];
    let sent!: (n: number) => void;
    const sending = new Promise<number>((resolve) => (sent = resolve));
    const publishClaimed = async (q: Queryable, tx: Queryable | undefined) => {
      const rows = local ? await local.claim(batchSize) : await claimUnpublished(q, batchSize);
      if (rows.length === 0) return []; // nothing is sent: `done` (after the COMMIT) answers
      claimed = rows.map((r) => r.seq);
      const confirmed = publish(tx, rows); // handed to the broker in order now (see publish)
      sent(rows.length);
      await confirmed;
      return markPublished(q, claimed);
    };
    const done = (local ? publishClaimed(db, undefined) : withTransaction(db, (tx) => publishClaimed(tx, tx)))
      .then(
        (lags) => {
          for (const s of lags) outboxPublishLag.observe(s);
          return lags.length;
        },
        async (err: unknown) => {
          if (claimed.length > 0) await markPublishFailed(db, claimed, errorText(err)).catch(() => {});
          throw err;
        },
      )
      .finally(() => local?.release(claimed));
    // Locked mode returns once the batch is sent, or once it ended without being sent (empty, its
    // COMMIT made; or failed).
    const n = mode === 'locked' ? await Promise.race([sending, done]) : await done;
    return { n, done };
  }

  let lastPendingAt = 0;
  /**
   * Refreshes the pending gauge, at most once a second; once per 10 s while `failing` (publishing
   * has not worked since it last failed). (Old events are pruned by housekeeping.)
   */
  async function refreshPending(failing: boolean): Promise<void> {
    const now = Date.now();
    if (now - lastPendingAt < (failing ? PENDING_REFRESH_FAILING_MS : PENDING_REFRESH_MS)) return;
    lastPendingAt = now;
    try {
      outboxPending.set(await countPending(db));
    } catch (err) {
      log.warn({ err }, 'outbox relay could not count pending events');
    }
  }

  // Why the short poll while busy: a NOTIFY serialises committing transactions database-wide
  // (PostgreSQL holds a lock from the NOTIFY until the commit is flushed), so commits do not
  // notify while every relay is awake (migration 011); a commit that lands just after an empty
  // claim is then picked up within `activePollMs` instead of at the next long poll.
  async function loop(): Promise<void> {
    let failures = 0;
    let lastWorkAt = 0;
    // Batches sent and not yet settled (locked mode), and the first failure among them.
    const inFlight = new Set<Promise<unknown>>();
    let failed: { err: unknown } | undefined;
    let solo = false;
    const settle = async () => {
      while (inFlight.size) await Promise.allSettled([...inFlight]);
    };
    while (!stopped) {
      woken = false;
      // After a failure the first batch goes alone: were the next one sent while the first is
      // failing on a connection that is just coming back, it could overtake it.
      const depth = solo ? 1 : pipelineDepth;
      while (inFlight.size >= depth) await Promise.race(inFlight);
      if (stopped) break; // stopped while it waited: no new batch (stop() may have returned already)
      let n = 0;
      if (!failed) {
        try {
          const batch = await startBatch();
          n = batch.n;
          if (n > 0) {
            const tracked: Promise<unknown> = batch.done
              .then(
                () => {
                  if (failures > 0) log.info({ failures }, 'outbox relay publishing again');
                  failures = 0;
                  solo = false;
                },
                (err: unknown) => {
                  failed ??= { err };
                  wake(); // out of an idle wait, into the back-off
                },
              )
              .finally(() => inFlight.delete(tracked));
            inFlight.add(tracked);
          } else if (failures > 0) {
            // A claim that worked and found nothing: the database answers again, and there was
            // nothing to publish. (Left counting, the failure would also skip the drain at stop.)
            log.info({ failures }, 'outbox relay claiming again');
            failures = 0;
            solo = false;
          }
        } catch (err) {
          failed ??= { err };
        }
      }
      if (failed) {
        // Let the batches still out finish (they fail or succeed on their own), then back off and
        // claim again from the oldest unpublished row — nothing is skipped.
        await settle();
        const { err } = failed;
        failed = undefined;
        solo = true;
        failures++;
        const delay = Math.min(backoff.min * 2 ** (failures - 1), backoff.max);
        // First failure and then every tenth: a long outage should not flood the log.
        if (failures === 1 || failures % 10 === 0) log.warn({ err, failures, retry_in_ms: delay }, 'outbox publish failed; rows stay and will be retried');
        await refreshPending(true);
        await pause(delay * (0.8 + Math.random() * 0.4), false);
        continue;
      }
      // `failures` goes back to 0 once a batch is confirmed or a claim finds nothing: a batch merely
      // sent (locked mode) has not shown yet that publishing works again.
      await refreshPending(failures > 0);
      // A full batch is followed by another claim at once. A partial one took everything there
      // was: the next claim waits `partialPauseMs`, so events gather into one batch instead of an
      // empty claim (three statements) followed by a poll. An empty claim within `lingerMs` of the
      // last work waits `activePollMs`; after that the relay goes to sleep on the long poll, woken
      // by commits (see `sleepStep`).
      if (n > 0) {
        lastWorkAt = Date.now();
        if (sleep !== 'awake') await wakeUp();
        if (n < batchSize && partialPauseMs > 0) await pause(partialPauseMs, true);
      } else if (Date.now() - lastWorkAt < lingerMs) {
        await pause(activePollMs, true);
      } else {
        await sleepStep();
      }
    }
    // Unbounded here: a stop given a deadline stops waiting for this loop at its grace (stop()), and
    // a batch still out then ends on its own (committed, or rolled back when the process closes its
    // connections); the drain below is then past its time and not begun.
    await settle();
    if (sleep !== 'awake') await wakeUp();
    // Not while publishing is failing (a batch that failed in the last settle included): the rows
    // stay for the next relay, and stopping stays quick.
    const drainMs = Math.min(stopDrainMs, msLeft());
    if (failures === 0 && !failed && drainMs >= MIN_STOP_DRAIN_MS) {
      await withDeadline(drainOnStop(drainMs), drainMs, 'the last events at stop').catch(() => log.warn({ stop_drain_ms: drainMs }, 'outbox relay stopped publishing its last events at the deadline; the rest stay for the next relay'));
    }
  }

  /**
   * Stopping: what was committed up to now (by the consumers that finished their work before us)
   * is published now, not at the next start, which in a one-process deployment may be far off.
   * Batch by batch until a claim finds nothing, for at most `ms`; a broker that is away leaves the
   * rows to the next relay.
   */
  async function drainOnStop(ms: number): Promise<void> {
    const until = Date.now() + ms;
    try {
      while (Date.now() < until) {
        const batch = await startBatch();
        if (batch.n === 0 || (await batch.done) < batchSize) break;
      }
    } catch (err) {
      log.warn({ err }, 'outbox relay could not publish its last events at stop; they stay for the next relay');
    }
  }

  // Going to sleep (migration 011): commits notify only while some relay is registered as
  // sleeping, so a busy relay costs writers no NOTIFY. 'registered': writers may still be running
  // that checked before the registration; 'asleep': the barrier has passed, every later commit
  // notifies, and the claim after the barrier saw every earlier one.
  let sleep: 'awake' | 'registered' | 'asleep' = 'awake';
  let registeredAt = 0;
  const relayId = uuidv7();

  async function sleepStep(): Promise<void> {
    try {
      if (sleep === 'awake') {
        await registerSleeper(db, relayId);
        registeredAt = Date.now();
        sleep = 'registered';
      }
      if (sleep === 'registered') {
        // Passed: claim once more before sleeping (the loop does, at once). Not passed (a writer
        // is in progress): keep polling quickly and try again.
        if (await writersBarrier(db)) sleep = 'asleep';
        else await pause(activePollMs, true);
        return;
      }
      if (Date.now() - registeredAt > REGISTRATION_REFRESH_MS) {
        await registerSleeper(db, relayId);
        registeredAt = Date.now();
      }
      // Wakes for the refresh even when the poll is longer (OUTBOX_POLL_MS may be up to an hour).
      await pause(Math.min(pollMs, REGISTRATION_REFRESH_MS), true);
    } catch (err) {
      log.warn({ err }, 'outbox relay could not register as sleeping; polling instead');
      await pause(activePollMs, true);
    }
  }

  async function wakeUp(): Promise<void> {
    sleep = 'awake';
    await unregisterSleeper(db, relayId).catch((err) => log.warn({ err }, 'outbox relay could not unregister as sleeping'));
  }

  const running = loop().catch((err) => log.error({ err }, 'outbox relay stopped by an unexpected error'));

  return {
    mode,
    wake,
    ready: listening.first.then(() => undefined),
    stop(deadline) {
      // One stop, whoever asks again: a second call waits for the first, bounded as it is.
      stopping ??= (async () => {
        stopped = true;
        if (deadline !== undefined) stopBy = deadline + STOP_GRACE_MS;
        interrupt?.();
        // With a deadline, not much past its grace, wherever the loop is (a batch of the other
        // modes holds it until its publish ends): what it does after that is at most a batch that
        // commits, or one that fails when the process closes its connections. A little time
        // (STOP_FLOOR_MS) even when the grace is spent: an idle relay still unregisters.
        if (stopBy === undefined) await running;
        else {
          await withDeadline(running, Math.max(msLeft(), STOP_FLOOR_MS), 'outbox relay still stopping').catch((err: unknown) =>
            log.warn({ grace_ms: STOP_GRACE_MS, err: errorText(err) }, 'outbox relay did not finish stopping by the deadline; what it has not published stays for the next relay'),
          );
        }
        // Bounded too: on the embedded database, a batch's transaction still open holds its one
        // connection, which the UNLISTEN needs.
        if (stopBy === undefined) await listening.stop();
        // Said, not thrown: the stop goes on (the process's connections close after it).
        else {
          await withDeadline(listening.stop(), Math.max(msLeft(), STOP_FLOOR_MS), 'outbox relay still listening').catch((err: unknown) =>
            log.warn({ err: errorText(err) }, 'outbox relay did not stop listening for new events cleanly'),
          );
        }
      })();
      return stopping;
    },
  };
}
