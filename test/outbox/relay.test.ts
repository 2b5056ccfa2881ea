import { describe, expect, it, onTestFinished, vi } from 'vitest';
import { PROJECT_HEADER, type Broker } from '../../src/broker/broker.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { outboxPending, outboxPublishLag } from '../../src/observability/metrics.ts';
import { eventMessageBody } from '../../src/outbox/idempotent.ts';
import { appendEvents, countPending } from '../../src/outbox/outbox.sql.ts';
import { STOP_GRACE_MS, canPublishInTransaction } from '../../src/outbox/relay.ts';
import { brokerKinds, makeTestBroker, type BrokerKind } from '../support/brokers.ts';
import type { Database } from '../../src/db/database.ts';
import { withDeadline } from '../../src/deadline.ts';
import { cleanUpAfterEachTest, makeTestDb, onCleanup, onServices, waitFor } from '../support/env.ts';
import { failingListen } from '../support/failing-listen.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import {
  contactCreated, effectCounts, firstOccurrences, interceptDb, relayFor, sessionStarted, startRecorder, switchableBroker, writeEvents,
} from './helpers.ts';

// Generous deadlines: on a busy 2-core machine PGlite (one WASM thread) gets a sliver of a CPU.
const LONG = 60_000;
/** Well under the minute after which a sleeping relay claims by itself (its registration refresh). */
const WAKE = 20_000;

cleanUpAfterEachTest();

const publishedSoFar = async () => (await outboxPublishLag.get()).values.find((v) => v.metricName === 'outbox_publish_lag_seconds_count')?.value ?? 0;

// The Postgres broker runs twice: publishing through the relay's transaction (its normal path)
// and with that capability hidden, which is the relay's path for brokers outside the database
// (row locks held over the publish on PostgreSQL; in-process claims on PGlite).
const variants = brokerKinds().flatMap((kind): Array<{ kind: BrokerKind; plain: boolean; label: string }> =>
  kind === 'postgres'
    ? [{ kind, plain: false, label: 'postgres broker, publish in transaction' }, { kind, plain: true, label: 'postgres broker, plain publish' }]
    : [{ kind, plain: false, label: `${kind} broker` }],
);

describe.each(variants)('outbox relay with the $label', ({ kind, plain }) => {
  const brokerFor = async (db: Database): Promise<Broker> => {
    const broker = await makeTestBroker(kind, db);
    return plain ? switchableBroker(broker, { inTransaction: false }).broker : broker;
  };

  it('publishes committed events in creation order with event id, type as routing key and project header', async () => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    const rec = await startRecorder(db, broker);
    const before = await publishedSoFar();
    const p = uuidv7();
    const events = Array.from({ length: 30 }, (_, i) => (i % 3 === 1 ? sessionStarted(p) : contactCreated(p)));
    for (let i = 0; i < events.length; i += 7) await withTransaction(db, (tx) => appendEvents(tx, events.slice(i, i + 7)));
    relayFor({ db, broker, pollMs: 50, batchSize: 8 });

    await waitFor(() => rec.applied.length === events.length, 'all events consumed', LONG);
    expect(rec.deliveries).toEqual(events.map((e) => e.id));
    for (const e of events) {
      expect(rec.routingKeys.get(e.id)).toBe(e.type);
      expect(rec.headers.get(e.id)?.[PROJECT_HEADER]).toBe(p);
    }
    await waitFor(async () => (await countPending(db)) === 0, 'rows marked published', LONG);
    expect(await publishedSoFar()).toBeGreaterThanOrEqual(before + events.length);
    await waitFor(async () => (await outboxPending.get()).values[0]?.value === 0, 'outbox_pending back to 0', LONG);
  }, 120_000);

  it('wakes on the commit notification instead of waiting for the poll', async () => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    const rec = await startRecorder(db, broker);
    // The pending-count query runs after a claim came back empty: from then on the relay sleeps.
    let idle = 0;
    const watched = interceptDb(db, (sql) => void (/count\(\*\)::int AS n FROM outbox/.test(sql) && idle++));
    await relayFor({ db: watched, broker, pollMs: 600_000 }).ready;
    await waitFor(() => idle > 0, 'the relay to go idle', LONG);
    const [id] = await writeEvents(db, 1);
    // The poll would take ten minutes, and a sleeping relay looks once a minute anyway (to refresh
    // its registration): only the NOTIFY at commit can make this pass within WAKE.
    await waitFor(() => rec.applied.includes(id), 'the event to arrive', WAKE);
  }, 120_000);

  it('publishes at stop what was committed while it waited, not at the next start', async () => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    const rec = await startRecorder(db, broker);
    // What each claim found, in order.
    const claims: number[] = [];
    const watched = interceptDb(db, () => {}, (sql, rows) => void (/FROM outbox\s+WHERE published_at IS NULL/.test(sql) && claims.push(rows)));
    // The first event is there before the relay starts, so it never goes to sleep (a commit racing
    // its way to sleep would be met only by the next short poll, here ten minutes away).
    const [first] = await writeEvents(db, 1);
    // Every wait ten minutes long: after its last work, nothing but the stop makes it claim again.
    const relay = relayFor({ db: watched, broker, pollMs: 600_000, activePollMs: 600_000, lingerMs: 600_000, partialPauseMs: 0 });
    await relay.ready;
    await waitFor(() => rec.applied.includes(first), 'the first event', LONG);
    // A claim that found nothing after the one that found the first event: the relay now waits.
    await waitFor(() => {
      const found = claims.findIndex((n) => n > 0);
      return found >= 0 && claims.slice(found + 1).includes(0);
    }, 'the relay to wait', LONG);
    const [second] = await writeEvents(db, 1);
    await relay.stop();
    expect(await countPending(db)).toBe(0);
    await waitFor(() => rec.applied.includes(second), 'the second event', LONG);
  }, 120_000);

  it("stops by STOP_GRACE_MS past the shutdown's deadline while a publish hangs, and the next relay publishes what it left", async () => {
    const { db } = await makeTestDb();
    const inner = await makeTestBroker(kind, db);
    const rec = await startRecorder(db, inner);
    const held = switchableBroker(inner, plain ? { inTransaction: false } : {});
    let release!: () => void;
    held.hold(new Promise<void>((r) => (release = r)));
    const ids = await writeEvents(db, 3); // there before it starts: its first claim finds them
    // The publish hangs well past the shutdown (its own deadline a minute away).
    const relay = relayFor({ db, broker: held.broker, pollMs: 600_000, publishTimeoutMs: 60_000 });
    onTestFinished(() => release()); // registered after the relay's own stop: runs before it
    await waitFor(() => held.attempts() > 0, 'a publish under way', LONG);
    const deadline = Date.now() + 100;
    // Asked again meanwhile (another part of the shutdown, a test's cleanup): answered with the first.
    await withDeadline(Promise.all([relay.stop(deadline), relay.stop()]), 30_000, 'the relay did not stop while its publish hung');
    // Ended by the grace (with slack for a busy machine), not by the publish, and not before it.
    const past = Date.now() - deadline;
    expect(past).toBeGreaterThanOrEqual(STOP_GRACE_MS - 50);
    expect(past).toBeLessThan(STOP_GRACE_MS + 3000);
    release(); // the held batch goes on (and commits, or not)
    const next = relayFor({ db, broker: inner, pollMs: 1000 });
    await waitFor(() => ids.every((id) => rec.applied.includes(id)), 'every event published once the broker answers', LONG);
    await waitFor(async () => (await countPending(db)) === 0, 'every event marked published', LONG);
    await next.stop();
  }, 120_000);

  it('publishes at stop what was committed while it waited, also after a claim that failed once and then worked', async () => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    const rec = await startRecorder(db, broker);
    // What each claim found (-1: the claim failed), in order.
    const claims: number[] = [];
    let failNextClaim = false;
    const watched = interceptDb(
      db,
      (sql) => {
        if (failNextClaim && /FROM outbox\s+WHERE published_at IS NULL/.test(sql)) {
          failNextClaim = false;
          claims.push(-1);
          throw new Error('Connection terminated unexpectedly (test: a database blip under one claim)');
        }
      },
      (sql, rows) => void (/FROM outbox\s+WHERE published_at IS NULL/.test(sql) && claims.push(rows)),
    );
    const [first] = await writeEvents(db, 1);
    // Every wait ten minutes long: after its last work, nothing but wake() or the stop makes it claim.
    const relay = relayFor({ db: watched, broker, pollMs: 600_000, activePollMs: 600_000, lingerMs: 600_000, partialPauseMs: 0 });
    await relay.ready;
    await waitFor(() => rec.applied.includes(first), 'the first event', LONG);
    await waitFor(() => {
      const found = claims.findIndex((n) => n > 0);
      return found >= 0 && claims.slice(found + 1).includes(0);
    }, 'the relay to wait', LONG);

    // One claim fails; the relay backs off and claims again, successfully (nothing pending).
    failNextClaim = true;
    relay.wake();
    await waitFor(() => {
      const failed = claims.indexOf(-1);
      return failed >= 0 && claims.slice(failed + 1).includes(0);
    }, 'a failed claim followed by one that worked', LONG);

    const [second] = await writeEvents(db, 1);
    await relay.stop();
    // As without the blip: what was committed before stop() is published by it.
    expect(await countPending(db)).toBe(0);
    await waitFor(() => rec.applied.includes(second), 'the second event', LONG);
  }, 120_000);

  it('keeps trying to LISTEN when its first try fails, and then wakes on commits again', async () => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    const rec = await startRecorder(db, broker);
    const flaky = failingListen(db, 1);
    let idle = 0;
    const watched = interceptDb(flaky.db, (sql) => void (/count\(\*\)::int AS n FROM outbox/.test(sql) && idle++));
    await relayFor({ db: watched, broker, pollMs: 600_000 }).ready;
    await waitFor(() => flaky.listening() === 1, 'LISTEN to succeed on a later try', LONG);
    await waitFor(() => idle > 0, 'the relay to go idle', LONG);
    const [id] = await writeEvents(db, 1);
    // Only a LISTEN made after the failure can make this pass within WAKE (see the test above).
    await waitFor(() => rec.applied.includes(id), 'the event to arrive', WAKE);
  }, 120_000);

  it('publishes again after dying between publish and mark, and the idempotent consumer applies it once', async () => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    const rec = await startRecorder(db, broker);
    const [id] = await writeEvents(db, 1);
    let crashes = 0;
    // The mark step is the only UPDATE that sets published_at; failing it once is the relay
    // dying after the broker accepted the batch and before the rows were marked.
    const crashOnce = interceptDb(db, (sql) => {
      if (/UPDATE outbox SET published_at/.test(sql) && crashes === 0) {
        crashes++;
        throw new Error('relay killed before marking (test)');
      }
    });
    relayFor({ db: crashOnce, broker, pollMs: 50 });

    await waitFor(async () => (await countPending(db)) === 0, 'the event to be marked published at last', LONG);
    const row = await db.query('SELECT publish_attempts, last_error FROM outbox WHERE id = $1', [id]);
    expect(crashes).toBe(1);
    expect(row.rows[0]).toEqual({ publish_attempts: 2, last_error: null });
    // With publish-in-transaction the first publish rolled back with the failed mark; otherwise
    // the broker got it twice and the consumer must absorb the duplicate.
    const expectedDeliveries = canPublishInTransaction(broker) ? 1 : 2;
    await waitFor(() => rec.deliveries.length >= expectedDeliveries, `${expectedDeliveries} deliveries`, LONG);
    await waitFor(async () => (await broker.stats([rec.queue]))[0].depth === 0, 'queue drained', LONG);
    expect(rec.deliveries).toEqual(Array(expectedDeliveries).fill(id));
    expect(rec.applied).toEqual([id]);
    expect(await effectCounts(db)).toEqual({ rows: 1, distinct: 1 });
  }, 120_000);

  it('gives a redelivered event no second effect', async () => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    const rec = await startRecorder(db, broker);
    const e = contactCreated(uuidv7());
    const msg = { messageId: e.id, body: eventMessageBody(e) };
    await broker.publish(e.type, [msg]);
    await broker.publish(e.type, [msg]);
    await waitFor(() => rec.deliveries.length === 2, 'both deliveries', LONG);
    expect(rec.applied).toEqual([e.id]);
    expect(await effectCounts(db)).toEqual({ rows: 1, distinct: 1 });
  }, 120_000);

  it('keeps events while publishing fails and drains them in creation order once it works again', async () => {
    const { db } = await makeTestDb();
    const real = await brokerFor(db);
    const rec = await startRecorder(db, real);
    const sw = switchableBroker(real);
    sw.fail(true);
    relayFor({ db, broker: sw.broker, pollMs: 50, batchSize: 25 });

    const ids: string[] = [];
    for (let i = 0; i < 20; i++) ids.push(...(await writeEvents(db, 5, { perTx: i % 2 ? 5 : 1 })));
    await waitFor(() => sw.attempts() >= 3, 'the relay to have tried (and failed) several times', LONG);
    expect(await countPending(db)).toBe(100);
    expect(rec.deliveries).toEqual([]);
    const tried = await db.query(`SELECT publish_attempts, last_error FROM outbox ORDER BY seq LIMIT 1`);
    expect(tried.rows[0].publish_attempts).toBeGreaterThan(0);
    expect(tried.rows[0].last_error).toMatch(/broker unavailable/);

    sw.fail(false);
    await waitFor(() => rec.applied.length === ids.length, 'every event consumed after recovery', LONG);
    await waitFor(async () => (await countPending(db)) === 0, 'the outbox drained', LONG);
    expect(firstOccurrences(rec.deliveries)).toEqual(ids);
    expect(rec.applied).toEqual(ids);
    expect(await effectCounts(db)).toEqual({ rows: ids.length, distinct: ids.length });
  }, 120_000);

  it('counts the backlog for outbox_pending at most every 10 s while publishing fails, not in every back-off round', async () => {
    const { db } = await makeTestDb();
    const sw = switchableBroker(await brokerFor(db));
    sw.fail(true);
    await writeEvents(db, 5, { perTx: 5 });
    // The relay's clock runs a second ahead with each failed round (it records the failure on the
    // rows, then backs off): rounds a second apart as the relay sees them, however quick here.
    const rounds = 40;
    let failed = 0;
    let counted = 0;
    let countedInRounds = -1;
    let reached!: () => void;
    const allRounds = new Promise<void>((resolve) => (reached = resolve));
    const realNow = Date.now.bind(Date);
    let ahead = 0;
    const clock = vi.spyOn(Date, 'now').mockImplementation(() => realNow() + ahead);
    onTestFinished(() => void clock.mockRestore());
    const watched = interceptDb(db, (sql) => {
      if (/count\(\*\)::int AS n FROM outbox/.test(sql)) counted++;
      if (/SET publish_attempts = publish_attempts \+ 1, last_error = \$2/.test(sql) && failed < rounds) {
        ahead += 1000;
        if (++failed === rounds) {
          countedInRounds = counted;
          reached();
        }
      }
    });
    relayFor({ db: watched, broker: sw.broker, pollMs: 50, backoffMs: { min: 1, max: 1 } });
    await withDeadline(allRounds, LONG, `${rounds} failed rounds`);

    // Once at the first failure, then once per ten seconds of the relay's clock (a count a round was 40).
    expect(countedInRounds).toBeGreaterThanOrEqual(1);
    expect(countedInRounds).toBeLessThanOrEqual(rounds / 10 + 1);
    expect((await outboxPending.get()).values[0]?.value).toBe(5);
    // Published at last: the gauge follows within a second.
    sw.fail(false);
    await waitFor(async () => (await outboxPending.get()).values[0]?.value === 0, 'outbox_pending back to 0', LONG);
  }, 120_000);

  it('lets a second relay publish other rows while the first is still publishing, never the same ones', async ({ skip }) => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    // PGlite is one connection: with publish-in-transaction the first relay's open transaction
    // holds the whole database, so relays there take turns (one batch at a time) instead.
    if (db.kind === 'pglite' && canPublishInTransaction(broker)) skip('relays take turns on one PGlite connection');
    const ids = await writeEvents(db, 10);
    const first = switchableBroker(broker);
    const second = switchableBroker(broker);
    let release!: () => void;
    first.hold(new Promise<void>((r) => (release = r)));
    try {
      // One batch in flight each (no pipelining), so the first relay holds exactly one batch.
      relayFor({ db, broker: first.broker, pollMs: 50, batchSize: 5, pipelineDepth: 1 });
      await waitFor(() => first.attempts() > 0, 'the first relay to be publishing its batch', LONG);
      relayFor({ db, broker: second.broker, pollMs: 50, batchSize: 5, pipelineDepth: 1 });
      await waitFor(() => second.published.length >= 5, 'the second relay to publish five', LONG);
      expect(second.published).toEqual(ids.slice(5));
      expect(first.published).toEqual([]); // still held at the gate, its rows still claimed
    } finally {
      release(); // also when an assertion failed: the relay must be able to stop
    }
    await waitFor(async () => (await countPending(db)) === 0, 'every row published', LONG);
    expect(first.published).toEqual(ids.slice(0, 5));
    expect(second.published).toEqual(ids.slice(5));
  }, 120_000);

  it.runIf(kind === 'rabbitmq')('sends the next batch while the previous one waits for its confirm, and keeps creation order', async () => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    const gated = switchableBroker(broker);
    const rec = await startRecorder(db, broker);
    const ids = await writeEvents(db, 10);
    let release!: () => void;
    gated.hold(new Promise<void>((r) => (release = r)));
    try {
      const relay = relayFor({ db, broker: gated.broker, pollMs: 50, batchSize: 5, pipelineDepth: 2 });
      expect(relay.mode).toBe('locked');
      // Both batches are claimed and handed to the broker before the first one is confirmed.
      await waitFor(() => gated.attempts() >= 2, 'two batches in flight at once', LONG);
      expect(gated.published).toEqual([]);
      expect(await countPending(db)).toBe(10);
    } finally {
      release();
    }
    await waitFor(() => rec.applied.length === ids.length, 'all events consumed', LONG);
    expect(rec.deliveries).toEqual(ids);
    await waitFor(async () => (await countPending(db)) === 0, 'rows marked published', LONG);
  }, 120_000);

  // 10,000 on the real services; PGlite runs one query at a time, so fewer there keep it quick.
  const total = onServices ? 10_000 : 3_000;
  it(`runs three relays at once over ${total} events: each is published once and applied once`, async () => {
    const { db } = await makeTestDb();
    const broker = await brokerFor(db);
    const rec = await startRecorder(db, broker, { concurrency: 16 });
    const ids = await writeEvents(db, total, { perTx: 250 });
    const counted = [0, 0, 0].map(() => switchableBroker(broker));
    for (const c of counted) relayFor({ db, broker: c.broker, pollMs: 50, batchSize: 100 });

    await waitFor(() => rec.applied.length === total, `${total} effects`, 200_000, 50);
    await waitFor(async () => (await countPending(db)) === 0, 'the outbox drained', LONG);
    expect(new Set(rec.applied)).toEqual(new Set(ids));
    expect(await effectCounts(db)).toEqual({ rows: total, distinct: total });
    // SKIP LOCKED (or the in-process lock on PGlite) keeps relays off each other's rows: each
    // event was handed to the broker once, by one relay, and the work was shared.
    const published = counted.flatMap((c) => c.published);
    expect(published.length).toBe(total);
    expect(new Set(published)).toEqual(new Set(ids));
    expect(counted.filter((c) => c.published.length > 0).length).toBeGreaterThanOrEqual(2);
  }, 300_000);
});

describe.runIf(onServices)('outbox relay when its RabbitMQ connection breaks', () => {
  it('backs off while cut off, reconnects, and drains in creation order with each effect once', async () => {
    const { db } = await makeTestDb();
    const direct = await makeTestBroker('rabbitmq', db);
    const rec = await startRecorder(db, direct);
    // The relay reaches the same RabbitMQ (same namespace) through a proxy the test can cut.
    const url = process.env.AMQP_URL!;
    const u = new URL(url);
    const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port || 5672) });
    onCleanup(() => proxy.close());
    const { connectRabbitBroker } = await import('../../src/broker/rabbitmq.ts');
    const viaProxy = await connectRabbitBroker({ url: proxy.urlFor(url), db, retryDelaysMs: [50], namespace: direct.namespace });
    onCleanup(() => viaProxy.close());
    relayFor({ db, broker: viaProxy, pollMs: 50 });

    const ids = await writeEvents(db, 20);
    await waitFor(() => rec.applied.length === 20, 'events flowing through the proxy', LONG);
    proxy.cut();
    for (let i = 0; i < 10; i++) ids.push(...(await writeEvents(db, 1 + (i % 3))));
    await waitFor(async () => (await db.query(`SELECT 1 FROM outbox WHERE publish_attempts > 0 AND published_at IS NULL`)).rowCount > 0, 'a failed publish', LONG);
    expect(await countPending(db)).toBe(ids.length - 20);
    proxy.restore();
    ids.push(...(await writeEvents(db, 5)));

    await waitFor(() => rec.applied.length === ids.length, 'every event applied after the reconnect', 30_000);
    await waitFor(async () => (await countPending(db)) === 0, 'the outbox drained', LONG);
    expect(firstOccurrences(rec.deliveries)).toEqual(ids);
    expect(await effectCounts(db)).toEqual({ rows: ids.length, distinct: ids.length });
  }, 120_000);
});
