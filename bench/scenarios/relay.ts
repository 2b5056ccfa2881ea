// Scenario "relay": the outbox relay under load.
// Phase 1 (lag): one event per transaction at a steady rate; for each event, the time from its
//   commit (the writer's COMMIT returning) to a consumer of `domain.events` receiving it.
// Phase 2 (throughput): N unpublished rows are written with no relay running, then relays start;
//   the time until every row is published (confirmed and marked) gives events/s. The queue they
//   filled is then consumed, which gives the consumer side's rate.
import { performance } from 'node:perf_hooks';
import type { Consumer } from '../../src/broker/broker.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { newEvent, type EventEnvelope } from '../../src/domain/events.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { outboxPublishLag } from '../../src/observability/metrics.ts';
import { appendEvents, countPending } from '../../src/outbox/outbox.sql.ts';
import { startRelay, type Relay } from '../../src/outbox/relay.ts';
import type { BenchEnv } from '../env.ts';
import { percentile, type Measure } from '../report.ts';
import type { Options, Scenario } from '../run.ts';

const TYPE = 'message.received';
const PROJECT = uuidv7();

function sampleEvent(): EventEnvelope {
  const id = uuidv7();
  return newEvent(TYPE, {
    projectId: PROJECT,
    aggregateId: id,
    data: {
      message_id: id,
      contact_id: uuidv7(),
      session_id: uuidv7(),
      channel_id: PROJECT,
      direction: 'inbound',
      from_me: false,
      type: 'text',
      text: 'Olá! Vi o anúncio e queria saber o preço do plano anual, por favor.',
      media: null,
      location: null,
      contact_card: null,
      external_id: `false_5511987654321@c.us_${id.slice(-12)}`,
      status: 'received',
      timestamp: new Date().toISOString(),
      reply_to_external_id: null,
    },
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function until(probe: () => boolean | Promise<boolean>, what: string, timeoutMs: number, everyMs = 10): Promise<void> {
  const deadline = performance.now() + timeoutMs;
  while (!(await probe())) {
    if (performance.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(everyMs);
  }
}

async function publishedCount(): Promise<number> {
  return (await outboxPublishLag.get()).values.find((v) => v.metricName === 'outbox_publish_lag_seconds_count')?.value ?? 0;
}

type Config = { rate: number; durationS: number; warmupS: number; drainN: number; relays: number[]; batchSize: number; pollMs: number; concurrency: number };

async function lagPhase(env: BenchEnv, c: Config, queue: string) {
  const commitAt = new Map<string, number>();
  const recvAt = new Map<string, number>();
  const measured = new Set<string>();
  const consumer = await env.broker.consume(queue, async (d) => void recvAt.set(d.messageId, performance.now()), { concurrency: c.concurrency });
  const relay = startRelay({ db: env.db, broker: env.broker, pollMs: c.pollMs, batchSize: c.batchSize });
  const total = Math.round(c.rate * (c.warmupS + c.durationS));
  const warmup = Math.round(c.rate * c.warmupS);
  const inflight = new Set<Promise<void>>();
  let maxInflight = 0;
  let failedWrites = 0;
  let firstWriteError: string | undefined;
  const start = performance.now();
  let issued = 0;
  // Open-loop load: the i-th event is due at start + i/rate whatever happened to earlier ones,
  // so a slow commit shows up as lag instead of silently lowering the rate.
  while (issued < total) {
    const due = Math.min(total, Math.floor(((performance.now() - start) * c.rate) / 1000) + 1);
    for (; issued < due; issued++) {
      const e = sampleEvent();
      if (issued >= warmup) measured.add(e.id);
      // One INSERT outside BEGIN/COMMIT is its own transaction: the same commit, NOTIFY and
      // outbox row as a service's write, in one round trip instead of three, so the load
      // generator takes as little as possible of the CPU the relay is being measured on.
      const p: Promise<void> = appendEvents(env.writerDb, [e])
        .then(() => void commitAt.set(e.id, performance.now()))
        .catch((err) => {
          failedWrites++;
          firstWriteError ??= String(err);
        })
        .finally(() => inflight.delete(p));
      inflight.add(p);
      maxInflight = Math.max(maxInflight, inflight.size);
    }
    await sleep(1);
  }
  await Promise.all(inflight);
  // Commits per second over the run: below the target rate means the writer (or the database
  // behind it) could not keep up, and the lag figures describe a lighter load than asked for.
  let lastCommit = start;
  for (const t of commitAt.values()) lastCommit = Math.max(lastCommit, t);
  const commitRate = commitAt.size / ((lastCommit - start) / 1000);
  await until(() => recvAt.size >= total - failedWrites, `the consumer to receive ${total} events`, 120_000);
  await relay.stop();
  await consumer.stop();

  const lags: number[] = [];
  for (const id of measured) {
    const a = commitAt.get(id);
    const b = recvAt.get(id);
    // The consumer can run before the writer's COMMIT promise callback does (same process, and
    // on PGlite same connection); that is a lag below timer resolution: count it as 0.
    if (a !== undefined && b !== undefined) lags.push(Math.max(0, b - a));
  }
  lags.sort((x, y) => x - y);
  return {
    events: lags.length,
    achieved_rate: Math.round(commitRate),
    failed_writes: failedWrites,
    first_write_error: firstWriteError ?? null,
    max_inflight_writes: maxInflight,
    p50_ms: percentile(lags, 50),
    p95_ms: percentile(lags, 95),
    p99_ms: percentile(lags, 99),
    max_ms: lags[lags.length - 1] ?? NaN,
  };
}

async function throughputPhase(env: BenchEnv, c: Config, queue: string, relayCount: number) {
  for (let done = 0; done < c.drainN; ) {
    const n = Math.min(1000, c.drainN - done);
    await withTransaction(env.writerDb, (tx) => appendEvents(tx, Array.from({ length: n }, sampleEvent)));
    done += n;
  }
  const pendingBefore = await countPending(env.db);
  // The relays drain alone: with the Postgres broker a consumer would compete for the same
  // database (on PGlite, the same single connection) and the figure would no longer be the relay's.
  const before = await publishedCount();
  const t0 = performance.now();
  const relays: Relay[] = Array.from({ length: relayCount }, () => startRelay({ db: env.db, broker: env.broker, pollMs: c.pollMs, batchSize: c.batchSize }));
  await until(async () => (await publishedCount()) - before >= pendingBefore, `${pendingBefore} events published`, 600_000, 5);
  const publishS = (performance.now() - t0) / 1000;
  await Promise.all(relays.map((r) => r.stop()));
  // Then the queue they filled is consumed, for the consumer side's rate.
  let received = 0;
  const t1 = performance.now();
  const consumer: Consumer = await env.broker.consume(queue, async () => void received++, { concurrency: c.concurrency });
  await until(() => received >= pendingBefore, `the consumer to receive ${pendingBefore} events`, 600_000, 5);
  const receiveS = (performance.now() - t1) / 1000;
  await consumer.stop();
  return {
    relays: relayCount,
    events: pendingBefore,
    publish_s: publishS,
    events_per_s: pendingBefore / publishS,
    consumer_drain_s: receiveS,
    consumer_events_per_s: pendingBefore / receiveS,
  };
}

export const relayScenario: Scenario = {
  name: 'relay',
  description: 'outbox relay: commit → consumer lag at a steady rate, then maximum drain throughput',
  async run(env: BenchEnv, o: Options) {
    const c: Config = {
      rate: o.number('rate', 1000),
      durationS: o.number('duration', 20),
      warmupS: o.number('warmup', 2),
      drainN: o.number('drain', 50_000),
      relays: o.list('relays', [1, 3]),
      batchSize: o.number('batch', 500),
      pollMs: o.number('poll', 1000),
      concurrency: o.number('consumer-concurrency', 32),
    };
    const queue = 'bench.relay';
    await env.broker.declareQueues([{ name: queue, bindings: [TYPE] }]);
    console.log(`relay: lag at ${c.rate} events/s for ${c.durationS} s (+${c.warmupS} s warm-up)…`);
    const lag = await lagPhase(env, c, queue);
    if (lag.failed_writes > 0) console.warn(`relay: ${lag.failed_writes} writes failed (first: ${lag.first_write_error}); the lag covers the rest`);
    const drains = [];
    for (const n of c.drainN > 0 ? c.relays : []) { // --drain=0 skips the throughput phase
      console.log(`relay: throughput draining ${c.drainN} events with ${n} relay(s)…`);
      drains.push(await throughputPhase(env, c, queue, n));
    }
    // The targets are for PostgreSQL + RabbitMQ; on other pairs the numbers are informative.
    const targeted = env.database === 'postgres' && env.brokerKind === 'rabbitmq';
    const measures: Measure[] = [
      { name: `lag p50 at ${c.rate}/s`, value: lag.p50_ms, unit: 'ms' },
      { name: `lag p95 at ${c.rate}/s`, value: lag.p95_ms, unit: 'ms' },
      { name: `lag p99 at ${c.rate}/s`, value: lag.p99_ms, unit: 'ms', ...(targeted ? { target: { kind: 'max', value: 50 } } : {}) },
      { name: `lag max at ${c.rate}/s`, value: lag.max_ms, unit: 'ms' },
      { name: 'commit rate achieved', value: lag.achieved_rate, unit: 'events/s' },
      { name: 'events measured (after warm-up)', value: lag.events, unit: '' },
      { name: 'failed writes', value: lag.failed_writes, unit: '' },
      ...drains.flatMap((tp) => [
        {
          name: `relay throughput, ${tp.relays} relay${tp.relays > 1 ? 's' : ''} (${tp.events} events)`,
          value: tp.events_per_s,
          unit: 'events/s',
          ...(targeted ? { target: { kind: 'min' as const, value: 5000 } } : {}),
        },
        { name: `consumer drain of that queue (concurrency ${c.concurrency})`, value: tp.consumer_events_per_s, unit: 'events/s' },
      ]),
    ];
    return { config: c, measures, details: { lag, throughput: drains } };
  },
};
