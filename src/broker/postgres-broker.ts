// The Postgres-backed broker (architecture §7): durable queue tables in the application database,
// so a small deployment — and the embedded PGlite default — needs nothing else. Rows are claimed
// with SKIP LOCKED under a lease that is committed before the handler runs; a consumer that dies
// just lets its lease expire and the row is claimed again. LISTEN/NOTIFY wakes consumers, a poll
// is the safety net. The SQL lives in queue-messages.sql.ts.
import { randomBytes } from 'node:crypto';
import type { Database, Queryable } from '../db/database.ts';
import { keepListening, type Listening } from '../db/keep-listening.ts';
import { isDatabaseUnavailable } from '../db/unavailable.ts';
import { withDeadline } from '../deadline.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import {
  DOMAIN_EXCHANGE, OUTAGE_LIMIT_MS, errorText, outageDelay, retryDelayAfter,
  type Broker, type ConsumeOptions, type Consumer, type DeadLetterBody, type Delivery, type Handler, type OutgoingMessage,
} from './broker.ts';
import { insertDeadLetter } from './dead-letters.sql.ts';
import * as sql from './queue-messages.sql.ts';

export { QUEUE_CHANNEL } from './queue-messages.sql.ts';

/** Between rounds of a message whose handler found the database away, on a queue without retries. */
const OUTAGE_WAIT_MS = 30_000;

export type PostgresBrokerOptions = {
  db: Database;
  retryDelaysMs: readonly number[];
  /** Safety-net poll for missed notifications (ms). */
  pollMs?: number;
  /** How long a claim is valid without renewal (ms); a dead consumer's messages return after it. */
  leaseMs?: number;
  /** Claims without an outcome (crashes, expired leases) before a message is dead-lettered. */
  deliveryLimit?: number;
  logger?: Logger;
  /** How long a consumer's stop() (and close()) waits for its running handlers (SHUTDOWN_TIMEOUT_MS). */
  shutdownTimeoutMs?: number;
};

/**
 * Beyond the port: publishing through the caller's transaction (architecture §7), so the outbox
 * relay marks events published in the same commit that enqueues them. The relay detects it.
 */
export type PostgresBroker = Broker & {
  publishInTransaction(tx: Queryable, routingKey: string, msgs: readonly OutgoingMessage[]): Promise<void>;
};

type RunningConsumer = { queue: string; wake(): void; stop(timeoutMs?: number): Promise<void> };

export function makePostgresBroker(opts: PostgresBrokerOptions): PostgresBroker {
  const { db } = opts;
  const pollMs = opts.pollMs ?? 1000;
  const leaseMs = opts.leaseMs ?? 30_000;
  const deliveryLimit = opts.deliveryLimit ?? 10;
  const logger = opts.logger ?? silentLogger;
  // Leases are renewed (and heartbeats written) three times per lease, so one slow round trip
  // never hands a running handler's message to another consumer.
  const heartbeatMs = Math.max(10, Math.floor(leaseMs / 3));
  const consumers = new Set<RunningConsumer>();
  const keptBodies = new Map<string, DeadLetterBody>(); // keepInDeadLetters
  let listening: Listening | undefined;
  let closed = false;

  /** LISTEN from the first consumer on, retried in the background while it fails (the poll delivers meanwhile). */
  function ensureListening(): Promise<unknown> {
    if (closed) return Promise.resolve(); // close() has stopped listening, or is about to
    listening ??= keepListening(
      db,
      sql.QUEUE_CHANNEL,
      (queue) => {
        for (const c of consumers) if (c.queue === queue) c.wake();
      },
      {
        logger,
        what: 'queue messages',
        fallback: 'consumers poll',
        // Back after a drop: messages announced meanwhile were missed; every consumer looks now.
        onResume: () => {
          for (const c of consumers) c.wake();
        },
      },
    );
    return listening.first;
  }

  async function consume(queue: string, handler: Handler, o: ConsumeOptions = {}): Promise<Consumer> {
    if (closed) throw new Error('broker is closed');
    const consumerId = `${queue}:${process.pid}:${randomBytes(4).toString('hex')}`;
    const concurrency = Math.max(1, Math.floor(o.concurrency ?? 1));
    const delays = o.retryDelaysMs ?? opts.retryDelaysMs;
    const log = logger.child({ queue, consumer: consumerId });
    const inFlight = new Map<string, Promise<void>>(); // row id → its handler run
    let running = true;
    let claiming: Promise<void> | undefined;
    let again = false;
    let dueTimer: NodeJS.Timeout | undefined;
    let dueAt = Infinity;
    let beating = false;
    let stopping: Promise<void> | undefined;

    const wake = (): void => {
      if (!running) return;
      if (claiming) {
        again = true; // woken mid-claim: look again right after, or a notification is lost
        return;
      }
      again = false;
      claiming = claimOnce()
        .catch((err) => log.warn({ err }, 'claiming failed; retrying at the next poll'))
        .finally(() => {
          claiming = undefined;
          if (again) wake();
        });
    };

    // Wake for a message coming due before the next poll (a retry delay shorter than pollMs).
    const wakeIn = (ms: number): void => {
      if (!running || ms >= pollMs) return;
      const delay = Math.max(ms, 10);
      if (dueTimer && dueAt <= Date.now() + delay) return;
      clearTimeout(dueTimer);
      dueAt = Date.now() + delay;
      dueTimer = setTimeout(() => {
        dueTimer = undefined;
        dueAt = Infinity;
        wake();
      }, delay);
      dueTimer.unref();
    };

    async function claimOnce(): Promise<void> {
      const free = concurrency - inFlight.size;
      if (free <= 0) return; // a finishing handler wakes us
      const claimed = await sql.claimMessages(db, { queue, limit: free, leaseMs, consumerId, running: [...inFlight.keys()] });
      if (!running) {
        // Stopped while claiming: hand back what no handler has started.
        if (claimed.length) await sql.releaseClaims(db, claimed.map((m) => m.id), consumerId);
        return;
      }
      for (const m of claimed) {
        inFlight.set(m.id, handle(m).finally(() => {
          inFlight.delete(m.id);
          wake();
        }));
      }
      if (claimed.length < free) {
        const ms = await sql.nextDueMs(db, queue, consumerId);
        if (ms !== null) wakeIn(ms);
      }
    }

    const deliveryOf = (m: sql.ClaimedMessage, attempt: number): Delivery => ({ messageId: m.messageId, queue, routingKey: m.routingKey, body: m.body, headers: m.headers, attempt });

    async function handle(m: sql.ClaimedMessage): Promise<void> {
      const attempt = m.attempts + 1;
      const claim: sql.Claim = { id: m.id, consumerId, deliveries: m.deliveries };
      const ctx = { message_id: m.messageId, attempt };
      try {
        const unsettled = m.deliveries - m.attempts;
        if (unsettled > deliveryLimit) {
          const error = `delivery limit exceeded: claimed ${unsettled} times without an outcome (its consumer crashed or lost the lease while handling it)`;
          log.error(ctx, error);
          return await deadLetter(m, claim, error, m.deliveries - 1);
        }
        const delivery = deliveryOf(m, attempt);
        let failed: { err: unknown } | undefined;
        try {
          // Through a promise chain, so a handler that throws synchronously is a failure like any other.
          await Promise.resolve().then(() => handler(delivery));
        } catch (err) {
          failed = { err };
        }
        if (!failed) return await sql.ackMessage(db, m.id);
        const error = errorText(failed.err);
        // The database blipped under the handler and is back (this very write needs it): no
        // attempt of the message is spent on that.
        // For at most OUTAGE_LIMIT_MS from its first such round (as on RabbitMQ).
        const withinOutageLimit = m.outageMs === null || m.outageMs <= OUTAGE_LIMIT_MS;
        const outage = isDatabaseUnavailable(failed.err) && withinOutageLimit ? (outageDelay(delays) ?? OUTAGE_WAIT_MS) : undefined;
        if (outage !== undefined) {
          log.warn({ ...ctx, error, retry_in_ms: outage }, 'database unavailable to the handler; message handed back, no attempt spent');
          await sql.handBack(db, claim, outage, error);
          return wakeIn(outage);
        }
        const delay = retryDelayAfter(attempt, delays);
        if (delay === undefined) {
          log.error({ ...ctx, error }, 'handler failed on its last attempt; message dead-lettered');
          return await deadLetter(m, claim, error, attempt);
        }
        log.warn({ ...ctx, error, retry_in_ms: delay }, 'handler failed; retrying later');
        await sql.scheduleRetry(db, claim, delay, error);
        wakeIn(delay);
      } catch (err) {
        // The outcome could not be recorded (database away): the lease expires, the row comes back.
        log.error({ ...ctx, err }, 'could not record the outcome of a message; it will be redelivered');
      }
    }

    async function deadLetter(m: sql.ClaimedMessage, claim: sql.Claim, error: string, attempts: number): Promise<void> {
      // What is kept is made first, outside the transaction: it may read the database itself, and
      // inside only the tx handle may (PGlite is one connection, a db.query there would deadlock).
      const keep = keptBodies.get(queue);
      const body = keep ? await keep(deliveryOf(m, attempts)) : m.body;
      await db.transaction(async (tx) => {
        if (!(await sql.deleteClaimed(tx, claim))) return; // lease lost: another consumer owns it now
        await insertDeadLetter(tx, { queue, messageId: m.messageId, routingKey: m.routingKey, headers: m.headers, body, error, attempts });
      });
    }

    async function heartbeat(): Promise<void> {
      if (beating) return;
      beating = true;
      try {
        await sql.heartbeatConsumer(db, consumerId, queue);
        if (inFlight.size) await sql.renewLeases(db, [...inFlight.keys()], consumerId, leaseMs);
      } catch (err) {
        log.warn({ err }, 'heartbeat failed');
      } finally {
        beating = false;
      }
    }

    // Housekeeping and registration must not keep a consumer from starting while the database
    // blips: the poll picks the work up once it answers again.
    await sql.pruneConsumers(db).catch((err) => log.warn({ err }, 'could not prune old consumers'));
    await heartbeat();
    await ensureListening();
    if (closed) {
      // close() ran meanwhile and has stopped the consumers it knew: this one would run on for good.
      await sql.removeConsumer(db, consumerId).catch(() => {});
      throw new Error('broker is closed');
    }
    const poll = setInterval(wake, pollMs);
    poll.unref();
    const beat = setInterval(() => void heartbeat(), heartbeatMs);
    beat.unref();

    const self: RunningConsumer = {
      queue,
      wake,
      stop(timeoutMs = opts.shutdownTimeoutMs ?? 10_000) {
        stopping ??= (async () => {
          running = false;
          clearInterval(poll);
          clearTimeout(dueTimer);
          await claiming;
          // Leases keep being renewed while we wait; past the deadline they are left to expire, so
          // whatever still runs is redelivered elsewhere rather than lost.
          let timer: NodeJS.Timeout | undefined;
          const done = await Promise.race([
            Promise.allSettled([...inFlight.values()]).then(() => true),
            new Promise<false>((r) => (timer = setTimeout(() => r(false), timeoutMs))),
          ]);
          clearTimeout(timer);
          clearInterval(beat);
          if (!done) log.warn({ in_flight: inFlight.size }, 'consumer stopped with handlers still running; their messages will be redelivered');
          await sql.removeConsumer(db, consumerId).catch((err) => log.warn({ err }, 'could not unregister the consumer'));
          consumers.delete(self);
        })();
        return stopping;
      },
    };
    consumers.add(self);
    wake();
    return { stop: (ms) => self.stop(ms) };
  }

  return {
    kind: 'postgres',
    declareQueues: (specs) => sql.declareBindings(db, DOMAIN_EXCHANGE, specs),
    publish: (routingKey, msgs) => sql.insertPublished(db, DOMAIN_EXCHANGE, routingKey, msgs),
    publishInTransaction: (tx, routingKey, msgs) => sql.insertPublished(tx, DOMAIN_EXCHANGE, routingKey, msgs),
    async send(queue, msgs, o = {}) {
      const p = sql.insertSent(db, queue, msgs);
      // Past the deadline the caller spills; a late commit then only makes a duplicate, which is fine.
      await (o.timeoutMs ? withDeadline(p, o.timeoutMs, `send to ${queue} timed out`) : p);
    },
    consume,
    keepInDeadLetters: (queue, keep) => void keptBodies.set(queue, keep),
    // A consumer is live while its heartbeat is younger than three beats (one lease).
    stats: (queues) => sql.queueStats(db, queues, heartbeatMs * 3),
    async check(timeoutMs) {
      if (closed) throw new Error('broker is closed');
      await db.ping(timeoutMs);
    },
    async close() {
      closed = true;
      await Promise.all([...consumers].map((c) => c.stop()));
      await listening?.stop();
      listening = undefined;
    },
  };
}
