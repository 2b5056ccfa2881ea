// Scenario "inbound": the whole inbound path.
//   1. end-to-end: WAHA webhooks posted at a steady rate (open loop, distinct messages from a pool
//      of contacts) through the ingress; for each message, the time from the request being sent to
//      the COMMIT of its transaction (a hook on the processor's service records it). The first
//      `--warmup` seconds run at the same rate and are not counted (connections, compiled code).
//      The processor runs in the process that serves the ingress (`--processor=same`, the default, as
//      in role `all`), or
//      in a process of its own beside it (`--processor=own`: an `api` and a `worker` process, as
//      deployed on PostgreSQL; needs DATABASE_URL);
//   2. sustained processing: N raw webhooks waiting in the queue, then P processor instances, each
//      with its own database pool and broker connection, drain it; messages/s until all are stored.
import { performance } from 'node:perf_hooks';
import type { Broker } from '../../src/broker/broker.ts';
import { Queues } from '../../src/broker/topology.ts';
import type { Database } from '../../src/db/database.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeChannelDirectory } from '../../src/inbound/channel-directory.ts';
import { EnvelopeHeaders } from '../../src/inbound/ingress.ts';
import { startInboundProcessor } from '../../src/inbound/processor.ts';
import { makeWahaGenerator } from '../../src/inbound/simulate-payloads.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { inboundEventsTotal } from '../../src/observability/metrics.ts';
import type { InboundService } from '../../src/services/inbound.service.ts';
import { percentile, type Measure } from '../report.ts';
import type { Options, Scenario } from '../run.ts';
import type { BenchEnv } from '../env.ts';
import { BENCH_SECRET_KEY, startBenchVentros, type BenchVentros } from './inbound-setup.ts';
import { runLoadInWorker } from './load-worker.ts';
import { startProcessorProcess, timedInboundService } from './processor-process.ts';

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function storedCount(db: Database, channelId: string): Promise<number> {
  return (await db.query<{ n: number }>('SELECT count(*)::int AS n FROM messages WHERE channel_id = $1', [channelId])).rows[0].n;
}

async function untilStored(db: Database, channelId: string, n: number, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while ((await storedCount(db, channelId)) < n) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${n} messages`);
    await sleep(20);
  }
}

/** Messages this process's processors have stored (inbound_events_total, result "stored"). */
async function storedMessagesCounted(): Promise<number> {
  const m = await inboundEventsTotal.get();
  return m.values.filter((x) => x.labels.result === 'stored').reduce((n, x) => n + x.value, 0);
}

function startProcessor(db: Database, broker: Broker, service?: InboundService) {
  const channels = makeChannelDirectory({ db, secretKey: BENCH_SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger });
  return startInboundProcessor({ db, broker, logger: silentLogger, channels, ...(service ? { service } : {}) });
}

type Placement = 'same' | 'own';

/** The processor in the Ventros process itself (role `all`), or in a process of its own. */
async function startTimedProcessor(v: BenchVentros, db: Database, placement: Placement): Promise<{ stop(): Promise<Map<string, number>> }> {
  if (placement === 'own') {
    if (!v.processorProcessConfig) throw new Error('a processor of its own needs PostgreSQL (DATABASE_URL)');
    const p = await startProcessorProcess(v.processorProcessConfig);
    return { stop: () => p.stop().finally(() => p.kill()) };
  }
  const committedAt = new Map<string, number>();
  const processor = await startProcessor(db, v.broker, timedInboundService(db, committedAt));
  return { stop: async () => (await processor.stop(), committedAt) };
}

async function endToEnd(v: BenchVentros, db: Database, c: { rate: number; durationS: number; warmupS: number; contacts: number }, placement: Placement) {
  const processor = await startTimedProcessor(v, db, placement);
  let stopped = false;
  try {
    const load = await runLoadInWorker({ url: v.webhookUrl, mode: 'open', rate: c.rate, durationS: c.durationS, warmupS: c.warmupS, contacts: c.contacts });
    await untilStored(db, v.channelId, load.acceptedAll, 60_000);
    stopped = true;
    const committedAt = await processor.stop();
    const e2e = load.sentAt.map(([key, sent]) => (committedAt.get(key) ?? NaN) - sent).filter(Number.isFinite).sort((a, b) => a - b);
    return {
      placement,
      accepted: load.count,
      failed: load.failed,
      achieved_rate: (load.count + load.failed) / load.measuredS,
      measured: e2e.length,
      p50_ms: percentile(e2e, 50),
      p90_ms: percentile(e2e, 90),
      p99_ms: percentile(e2e, 99),
      max_ms: e2e[e2e.length - 1] ?? NaN,
      http_p99_ms: percentile(load.latencies, 99),
    };
  } finally {
    if (!stopped) await processor.stop().catch(() => undefined);
  }
}

async function sustained(v: BenchVentros, c: { drainN: number; processors: number; contacts: number }) {
  const gen = makeWahaGenerator({ messagesOnly: true, contacts: c.contacts });
  const headers = { [EnvelopeHeaders.provider]: 'waha', [EnvelopeHeaders.channelId]: v.channelId, [EnvelopeHeaders.projectId]: v.projectId };
  const before = await storedCount(v.running.db, v.channelId);
  for (let sent = 0; sent < c.drainN; sent += 500) {
    const n = Math.min(500, c.drainN - sent);
    const at = new Date().toISOString();
    await v.broker.send(
      Queues.inboundRaw,
      Array.from({ length: n }, () => ({ messageId: uuidv7(), body: Buffer.from(JSON.stringify(gen.next().body)), headers: { ...headers, [EnvelopeHeaders.receivedAt]: at } })),
    );
  }
  const conns = await Promise.all(Array.from({ length: c.processors }, () => v.connect()));
  const storedBefore = await storedMessagesCounted();
  const t0 = performance.now();
  const processors = await Promise.all(conns.map((x) => startProcessor(x.db, x.broker)));
  try {
    // The end is when the processors have counted the last message stored (the counter moves after
    // each commit), read in this process: polling the database with count(*) every few ms, as an
    // earlier version did, took PostgreSQL CPU from the processors it was timing (polling every
    // 200 ms instead of 20 gave 4–8 % more in four alternating pairs). The database's count is
    // checked once after.
    const deadline = t0 + 600_000;
    while ((await storedMessagesCounted()) - storedBefore < c.drainN) {
      if (performance.now() > deadline) throw new Error(`timed out waiting for ${c.drainN} messages`);
      await sleep(5);
    }
    const s = (performance.now() - t0) / 1000;
    await untilStored(v.running.db, v.channelId, before + c.drainN, 60_000);
    return { processors: c.processors, messages: c.drainN, seconds: s, messages_per_s: c.drainN / s };
  } finally {
    await Promise.all(processors.map((p) => p.stop()));
  }
}

export const inboundScenario: Scenario = {
  name: 'inbound',
  description: 'webhook accepted → message committed at a steady rate, then sustained processing with several processors',
  async run(env: BenchEnv, o: Options) {
    const c = {
      rate: o.number('rate', 500),
      durationS: o.number('duration', 20),
      warmupS: o.number('warmup', 3),
      contacts: o.number('contacts', 2000),
      drainN: o.number('drain', 30_000),
      processors: o.number('processors', 2),
      processor: o.string('processor', 'same') as Placement,
    };
    if (c.processor !== 'same' && c.processor !== 'own') throw new Error('--processor is same or own');
    const v = await startBenchVentros(env, 'api');
    try {
      console.log(`inbound: end-to-end at ${c.rate} webhooks/s for ${c.warmupS} s not counted, then ${c.durationS} s…`);
      const e2e = await endToEnd(v, v.running.db, c, c.processor);
      console.log(`inbound: ${c.processors} processors draining ${c.drainN} queued webhooks…`);
      const drain = await sustained(v, c);
      const targeted = env.database === 'postgres' && env.brokerKind === 'rabbitmq';
      const measures: Measure[] = [
        { name: `end-to-end p50 at ${c.rate}/s`, value: e2e.p50_ms, unit: 'ms' },
        { name: `end-to-end p99 at ${c.rate}/s`, value: e2e.p99_ms, unit: 'ms', ...(targeted ? { target: { kind: 'max', value: 100 } } : {}) },
        { name: `end-to-end max at ${c.rate}/s`, value: e2e.max_ms, unit: 'ms' },
        { name: 'webhook rate achieved', value: e2e.achieved_rate, unit: 'req/s' },
        {
          name: `sustained processing, ${c.processors} processors`,
          value: drain.messages_per_s,
          unit: 'messages/s',
          ...(targeted ? { target: { kind: 'min', value: 1500 } } : {}),
        },
      ];
      return { config: c, measures, details: { end_to_end: e2e, sustained: drain } };
    } finally {
      await v.stop();
    }
  },
};
