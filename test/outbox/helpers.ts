// Shared pieces of the outbox tests: events to write, an idempotent consumer that records what it
// saw and applied, and fault injection (a database whose mark step fails, a broker that refuses).
import { onTestFinished } from 'vitest';
import type { Broker, Consumer, OutgoingMessage } from '../../src/broker/broker.ts';
import type { Database, Queryable, Row } from '../../src/db/database.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { newEvent, type EventEnvelope } from '../../src/domain/events.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { appendEvents } from '../../src/outbox/outbox.sql.ts';
import { handleOnce, parseEventMessage } from '../../src/outbox/idempotent.ts';
import { canPublishInTransaction, startRelay, type Relay, type RelayOptions } from '../../src/outbox/relay.ts';
import { uniqueName } from '../support/env.ts';

export function contactCreated(projectId: string, opts: { occurredAt?: Date | string; aggregateId?: string } = {}): EventEnvelope<'contact.created'> {
  const contactId = opts.aggregateId ?? uuidv7();
  return newEvent('contact.created', {
    projectId,
    aggregateId: contactId,
    occurredAt: opts.occurredAt,
    data: { contact_id: contactId, name: 'Ana Souza', phone: '+5511987654321', email: null, wa_id: '5511987654321', tags: [], custom_fields: {}, source: 'whatsapp', ad_attribution: null },
  });
}

export function sessionStarted(projectId: string): EventEnvelope<'session.started'> {
  const id = uuidv7();
  return newEvent('session.started', {
    projectId,
    aggregateId: id,
    data: { session_id: id, contact_id: uuidv7(), channel_id: uuidv7(), started_at: new Date().toISOString(), timeout_minutes: 30 },
  });
}

/** Commits `n` events, `perTx` per transaction; returns their ids in creation order. */
export async function writeEvents(db: Database, n: number, opts: { perTx?: number; projectId?: string } = {}): Promise<string[]> {
  const perTx = opts.perTx ?? 1;
  const projectId = opts.projectId ?? uuidv7();
  const ids: string[] = [];
  for (let i = 0; i < n; i += perTx) {
    const batch = Array.from({ length: Math.min(perTx, n - i) }, () => contactCreated(projectId));
    await withTransaction(db, (tx) => appendEvents(tx, batch));
    ids.push(...batch.map((e) => e.id));
  }
  return ids;
}

export async function createEffectsTable(db: Database): Promise<void> {
  await db.exec('CREATE TABLE IF NOT EXISTS test_effects (event_id uuid NOT NULL, applied_at timestamptz NOT NULL DEFAULT clock_timestamp())');
}

export async function effectCounts(db: Database): Promise<{ rows: number; distinct: number }> {
  const r = await db.query<{ rows: number; distinct: number }>('SELECT count(*)::int AS rows, count(DISTINCT event_id)::int AS distinct FROM test_effects');
  return r.rows[0];
}

export type Recorder = {
  queue: string;
  /** Event ids in delivery order, duplicates included. */
  deliveries: string[];
  /** Event ids whose effect this consumer applied, in the order applied. */
  applied: string[];
  routingKeys: Map<string, string>;
  headers: Map<string, Record<string, string>>;
  stop(): Promise<void>;
};

/** Declares a queue bound to every event and consumes it with an idempotent effect. */
export async function startRecorder(db: Database, broker: Broker, opts: { concurrency?: number; bindings?: string[] } = {}): Promise<Recorder> {
  await createEffectsTable(db);
  const queue = `consumer.${uniqueName('rec')}`;
  await broker.declareQueues([{ name: queue, bindings: opts.bindings ?? ['#'] }]);
  const rec: Omit<Recorder, 'stop'> = { queue, deliveries: [], applied: [], routingKeys: new Map(), headers: new Map() };
  const consumer: Consumer = await broker.consume(
    queue,
    async (d) => {
      const e = parseEventMessage(d);
      rec.deliveries.push(e.id);
      rec.routingKeys.set(e.id, d.routingKey);
      rec.headers.set(e.id, d.headers);
      const applied = await handleOnce(db, queue, e.id, async (tx) => {
        await tx.query('INSERT INTO test_effects (event_id) VALUES ($1)', [e.id]);
      });
      if (applied) rec.applied.push(e.id);
    },
    { concurrency: opts.concurrency ?? 1 },
  );
  let stopped = false;
  const stop = async () => {
    if (stopped) return;
    stopped = true;
    await consumer.stop();
  };
  onTestFinished(stop);
  return { ...rec, stop };
}

/** A relay (with short back-offs) stopped when the test ends, even when an assertion fails first. */
export function relayFor(opts: RelayOptions): Relay {
  const relay = startRelay({ backoffMs: { min: 20, max: 200 }, ...opts });
  onTestFinished(() => relay.stop());
  return relay;
}

/**
 * A view of `db` whose queries (also inside transactions) first go through `before(sql)`, and
 * whose answers, if `after` is given, through `after(sql, rows)`.
 */
export function interceptDb(db: Database, before: (sql: string) => void, after?: (sql: string, rows: number) => void): Database {
  const wrap = (q: Queryable): Queryable => ({
    query: async <T extends Row>(sql: string, params?: readonly unknown[]) => {
      before(sql);
      const answer = await q.query<T>(sql, params);
      after?.(sql, answer.rows.length);
      return answer;
    },
    exec: (sql) => {
      before(sql);
      return q.exec(sql);
    },
  });
  return {
    ...wrap(db),
    kind: db.kind,
    transaction: (fn, setup) => db.transaction((tx) => fn(wrap(tx)), setup),
    listen: (channel, cb) => db.listen(channel, cb),
    ping: (ms) => db.ping(ms),
    close: () => db.close(),
  };
}

/**
 * A broker whose publishing can be switched to fail; everything else goes to `broker`. Records
 * the message ids handed to the real broker (a rolled-back publish-in-transaction included).
 * `inTransaction: false` hides publishInTransaction, so the relay takes its other path.
 */
export type SwitchableBroker = {
  broker: Broker;
  fail(on: boolean): void;
  /** Publishes wait for `gate` (when set) before going to the broker. */
  hold(gate: Promise<void> | undefined): void;
  /** Publish calls so far, refused ones included. */
  attempts(): number;
  published: string[];
};

export function switchableBroker(broker: Broker, opts: { inTransaction?: boolean } = {}): SwitchableBroker {
  let failing = false;
  let attempts = 0;
  let gate: Promise<void> | undefined;
  const published: string[] = [];
  const guard = async (msgs: readonly OutgoingMessage[]) => {
    attempts++;
    if (gate) await gate;
    if (failing) throw new Error('broker unavailable (test)');
    published.push(...msgs.map((m) => m.messageId));
  };
  const wrapped: Broker & { publishInTransaction?: unknown } = {
    kind: broker.kind,
    declareQueues: (s) => broker.declareQueues(s),
    publish: async (key, msgs) => {
      await guard(msgs);
      await broker.publish(key, msgs);
    },
    send: (q, m, o) => broker.send(q, m, o),
    consume: (q, h, o) => broker.consume(q, h, o),
    keepInDeadLetters: (q, keep) => broker.keepInDeadLetters(q, keep),
    stats: (q) => broker.stats(q),
    check: () => broker.check(),
    close: () => broker.close(),
  };
  if (canPublishInTransaction(broker) && opts.inTransaction !== false) {
    wrapped.publishInTransaction = async (tx: Queryable, key: string, msgs: readonly OutgoingMessage[]) => {
      await guard(msgs);
      await broker.publishInTransaction(tx, key, msgs);
    };
  }
  return { broker: wrapped, fail: (on) => void (failing = on), hold: (g) => void (gate = g), attempts: () => attempts, published };
}

/** Ids in the order of their first occurrence. */
export function firstOccurrences(ids: readonly string[]): string[] {
  return [...new Set(ids)];
}
