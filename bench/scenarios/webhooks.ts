// Scenario "webhooks": outbound webhooks under load, against a fast local receiver that runs in its
// own process (so its HTTP work does not share our event loop).
// Phase 1 (throughput): N events written with no worker running, 10 subscriptions each; then the
//   relay and the webhook worker start, and the time until the receiver has all 10 N deliveries
//   gives deliveries/s (also the steady rate between 10% and 90% received).
// Phase 2 (isolation): the same with one of the ten endpoints never answering; the nine healthy
//   ones must keep ≥ 90% of their phase-1 share.
// Phase 3 (end to end): the whole application (startVentros) takes WAHA webhooks at a steady rate
//   through its HTTP ingress; latency from sending the webhook to the subscriber receiving the
//   signed message.received.
import { fork, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { fileURLToPath } from 'node:url';
import { request } from 'undici';
import { loadConfig, type Config } from '../../src/config.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { newEvent, type EventEnvelope } from '../../src/domain/events.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeWahaGenerator } from '../../src/inbound/simulate-payloads.ts';
import { startVentros } from '../../src/main.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { appendEvents } from '../../src/outbox/outbox.sql.ts';
import { startRelay } from '../../src/outbox/relay.ts';
import { makeWebhookSubscriptionsService } from '../../src/services/webhook-subscriptions.service.ts';
import { startWebhookWorker } from '../../src/webhooks/webhook-worker.ts';
import type { BenchEnv } from '../env.ts';
import { percentile, type Measure } from '../report.ts';
import type { Options, Scenario } from '../run.ts';

const SECRET_KEY = 'bench-'.padEnd(64, 'k');
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

// ---- the receiver (child process) -----------------------------------------------------------

type ToParent = { port: number } | { counts: Record<string, number> } | { seen: Array<[string, number]> };

/** Runs in the child: 200 on /fast/*, never answers /slow, reports message ids seen on /e2e. */
function runReceiver(): void {
  const counts: Record<string, number> = {};
  const held = new Set<ServerResponse>();
  let seen: Array<[string, number]> = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const path = req.url ?? '/';
      counts[path] = (counts[path] ?? 0) + 1;
      if (path.startsWith('/slow')) return void held.add(res);
      if (path.startsWith('/e2e')) {
        const ext = String(JSON.parse(Buffer.concat(chunks).toString()).data?.external_id ?? '');
        seen.push([ext.split('_').pop()!, Date.now()]);
      }
      res.writeHead(200, { 'content-type': 'text/plain' }).end('ok');
    });
  });
  server.keepAliveTimeout = 60_000;
  server.listen(0, '127.0.0.1', () => process.send!({ port: (server.address() as AddressInfo).port } satisfies ToParent));
  process.on('message', (m: string) => {
    if (m === 'counts') process.send!({ counts } satisfies ToParent);
    if (m === 'release') for (const r of held) r.writeHead(503).end();
  });
  setInterval(() => {
    if (seen.length) process.send!({ seen } satisfies ToParent);
    seen = [];
  }, 20).unref();
  process.on('disconnect', () => process.exit(0));
}

type Receiver = { url: string; counts(): Promise<Record<string, number>>; seen: Map<string, number>; release(): void; close(): void };

async function startReceiverProcess(): Promise<Receiver> {
  const child: ChildProcess = fork(fileURLToPath(import.meta.url), ['--receiver'], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const seen = new Map<string, number>();
  let waiting: ((c: Record<string, number>) => void) | undefined;
  child.on('message', (m: ToParent) => {
    if ('counts' in m) waiting?.(m.counts);
    if ('seen' in m) for (const [id, at] of m.seen) seen.set(id, at);
  });
  const [hello] = (await once(child, 'message')) as [{ port: number }];
  return {
    url: `http://127.0.0.1:${hello.port}`,
    counts: () => new Promise((resolve) => ((waiting = resolve), child.send('counts'))),
    seen,
    release: () => child.send('release'),
    close: () => void child.kill(),
  };
}

// ---- phases 1 and 2 --------------------------------------------------------------------------

function contactEvent(projectId: string): EventEnvelope {
  const id = uuidv7();
  return newEvent('contact.created', {
    projectId,
    aggregateId: id,
    data: { contact_id: id, name: 'Ana Souza', phone: '+5511987654321', email: null, wa_id: '5511987654321', tags: ['lead'], custom_fields: {}, source: 'whatsapp', ad_attribution: null },
  });
}

async function until(probe: () => Promise<boolean>, what: string, timeoutMs: number): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await probe())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(20);
  }
}

/** Writes `events` events for 10 subscriptions (paths[i]) and measures their delivery. */
async function drain(env: BenchEnv, config: Config, rx: Receiver, paths: string[], events: number, healthy: (p: string) => boolean) {
  const projectId = uuidv7();
  const hooks = makeWebhookSubscriptionsService({ db: env.db, broker: env.broker, secretKey: SECRET_KEY, allowPrivateUrls: true, retryScheduleMs: config.webhookRetryScheduleMs, defaultTimeoutMs: config.webhookTimeoutMs });
  for (const p of paths) await hooks.create(projectId, { url: `${rx.url}${p}`, events: ['contact.created'] });
  for (let i = 0; i < events; i += 500) {
    const batch = Array.from({ length: Math.min(500, events - i) }, () => contactEvent(projectId));
    await withTransaction(env.writerDb, (tx) => appendEvents(tx, batch));
  }
  const target = events * paths.filter(healthy).length;
  const delivered = async () => Object.entries(await rx.counts()).filter(([p]) => healthy(p)).reduce((n, [, c]) => n + c, 0);
  const base = await delivered();
  const t0 = Date.now();
  // The worker first: it declares the fan-out queue, and RabbitMQ drops what is published to an
  // exchange before a queue is bound to it.
  const worker = await startWebhookWorker({ db: env.db, broker: env.broker, config, secretKey: SECRET_KEY, logger: silentLogger });
  const relay = startRelay({ db: env.db, broker: env.broker, pollMs: 100 });
  let t10 = 0;
  let t90 = 0;
  await until(async () => {
    const n = (await delivered()) - base;
    if (!t10 && n >= target * 0.1) t10 = Date.now();
    if (!t90 && n >= target * 0.9) t90 = Date.now();
    return n >= target;
  }, `${target} deliveries`, 600_000);
  const seconds = (Date.now() - t0) / 1000;
  rx.release(); // let the hanging attempts end so the worker can stop
  for (const c of worker.reverse()) await c.stop();
  await relay.stop();
  return { deliveries: target, seconds, per_s: target / seconds, steady_per_s: (target * 0.8) / ((t90 - t10) / 1000 || 1) };
}

// ---- phase 3 ---------------------------------------------------------------------------------

async function endToEnd(env: BenchEnv, rx: Receiver, c: { rate: number; durationS: number; warmupS: number }) {
  const config = loadConfig({ LOG_LEVEL: 'warn', PORT: '0', SECRET_KEY, WEBHOOK_ALLOW_PRIVATE_URLS: 'true' });
  const running = await startVentros({ config, db: env.db, broker: env.broker, logger: silentLogger });
  // A relay of our own in case the composition root does not run one; two are harmless.
  const relay = startRelay({ db: env.db, broker: env.broker, pollMs: 100 });
  try {
    const app = running.app!;
    const reg = await app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { name: 'Bench', email: `bench-${uuidv7()}@example.com`, password: 'correct horse battery staple' } });
    const auth = { authorization: `Bearer ${reg.json().api_key.key}` };
    const channel = await app.inject({ method: 'POST', url: '/api/v1/channels', headers: auth, payload: { name: 'bench', type: 'waha', config: { base_url: 'http://waha.example.test:3000', api_key: 'k', session: 'default' } } });
    if (channel.statusCode !== 201) throw new Error(`creating the channel answered ${channel.statusCode}: ${channel.body}`);
    const ingress = new URL(channel.json().webhook_url);
    const target = `${running.url}${ingress.pathname}${ingress.search}`;
    const sub = await app.inject({ method: 'POST', url: '/api/v1/webhook-subscriptions', headers: auth, payload: { url: `${rx.url}/e2e`, events: ['message.received'] } });
    if (sub.statusCode !== 201) throw new Error(`subscribing answered ${sub.statusCode}: ${sub.body}`);

    const gen = makeWahaGenerator({ messagesOnly: true, contacts: 500 });
    const sent = new Map<string, number>();
    const measured = new Set<string>();
    const total = Math.round(c.rate * (c.warmupS + c.durationS));
    let failed = 0;
    const inflight = new Set<Promise<void>>();
    const start = Date.now();
    for (let issued = 0; issued < total; ) {
      const due = Math.min(total, Math.floor(((Date.now() - start) * c.rate) / 1000) + 1);
      for (; issued < due; issued++) {
        const g = gen.next();
        const inbound = g.kind !== 'from_me' && g.messageId;
        if (inbound) sent.set(g.messageId!, Date.now());
        if (inbound && issued >= c.rate * c.warmupS) measured.add(g.messageId!);
        const p: Promise<void> = request(target, { method: 'POST', body: JSON.stringify(g.body), headers: { 'content-type': 'application/json' } })
          .then(async (r) => void (await r.body.dump(), r.statusCode !== 200 && failed++))
          .catch(() => void failed++)
          .finally(() => inflight.delete(p));
        inflight.add(p);
      }
      await sleep(1);
    }
    await Promise.all(inflight);
    const deadline = Date.now() + 30_000;
    while ([...measured].some((id) => !rx.seen.has(id)) && Date.now() < deadline) await sleep(50);
    const lat = [...measured].filter((id) => rx.seen.has(id)).map((id) => rx.seen.get(id)! - sent.get(id)!).sort((a, b) => a - b);
    const stages = await stageTimes(env, reg.json().project.id, sent, rx.seen);
    return { messages: measured.size, received: lat.length, failed_posts: failed, p50_ms: percentile(lat, 50), p95_ms: percentile(lat, 95), p99_ms: percentile(lat, 99), max_ms: lat[lat.length - 1] ?? NaN, stages };
  } finally {
    await relay.stop();
    await running.stop();
  }
}

/** Where the end-to-end time goes, per stage (p50/p99 ms), from the rows each stage wrote. */
async function stageTimes(env: BenchEnv, projectId: string, sent: Map<string, number>, seen: Map<string, number>) {
  const r = await env.db.query<{ ext: string; stored: number; published: number; fanned: number; attempted: number; duration: number }>(
    `SELECT o.data->>'external_id' AS ext, extract(epoch FROM o.created_at) * 1000 AS stored, extract(epoch FROM o.published_at) * 1000 AS published,
       extract(epoch FROM d.created_at) * 1000 AS fanned, extract(epoch FROM a.at) * 1000 AS attempted, a.duration_ms AS duration
     FROM outbox o JOIN webhook_deliveries d ON d.event_id = o.id JOIN webhook_attempts a ON a.delivery_id = d.id AND a.n = 1
     WHERE o.project_id = $1 AND o.type = 'message.received'`,
    [projectId],
  );
  const stage = (f: (x: (typeof r.rows)[number]) => number) => {
    const v = r.rows.map(f).filter(Number.isFinite).sort((a, b) => a - b);
    return { p50: Math.round(percentile(v, 50)), p99: Math.round(percentile(v, 99)) };
  };
  return {
    ingress_to_stored: stage((x) => x.stored - (sent.get(x.ext.split('_').pop()!) ?? NaN)),
    // The relay marks rows published after the broker confirmed them, and a consumer may be
    // faster than that mark: fan-out is measured from the commit, not from published_at.
    stored_to_published: stage((x) => x.published - x.stored),
    stored_to_delivery: stage((x) => x.fanned - x.stored),
    delivery_to_attempt: stage((x) => x.attempted - x.fanned),
    attempt_duration: stage((x) => x.duration),
    // The webhook part alone: from the fan-out's delivery row to the subscriber having it.
    delivery_to_received: stage((x) => (seen.get(x.ext.split('_').pop()!) ?? NaN) - x.fanned),
  };
}

export const webhooksScenario: Scenario = {
  name: 'webhooks',
  description: 'outbound webhooks: delivery throughput, isolation from a timing-out endpoint, inbound → subscriber latency',
  async run(env: BenchEnv, o: Options) {
    const c = {
      events: o.number('events', 3000),
      concurrency: o.number('concurrency', 64),
      rate: o.number('rate', 200),
      durationS: o.number('duration', 20),
      warmupS: o.number('warmup', 2),
    };
    const phases = new Set(o.string('phases', 'throughput,isolation,e2e').split(','));
    const config = loadConfig({ LOG_LEVEL: 'warn', WEBHOOK_ALLOW_PRIVATE_URLS: 'true', WEBHOOK_CONCURRENCY: String(c.concurrency) });
    const targeted = env.database === 'postgres' && env.brokerKind === 'rabbitmq';
    const t = (kind: 'min' | 'max', value: number) => (targeted ? { target: { kind, value } } : {});
    const measures: Measure[] = [];
    const details: Record<string, unknown> = {};
    const rx = await startReceiverProcess();
    try {
      if (phases.has('throughput') || phases.has('isolation')) {
        console.log(`webhooks: throughput, ${c.events} events × 10 subscriptions…`);
        const all = await drain(env, config, rx, Array.from({ length: 10 }, (_, i) => `/fast/a${i}`), c.events, (p) => p.startsWith('/fast/a'));
        details.throughput = all;
        measures.push(
          { name: `delivery throughput (${all.deliveries} deliveries, 10 endpoints)`, value: all.per_s, unit: 'deliveries/s', ...t('min', 2000) },
          { name: 'steady delivery rate (10% → 90%)', value: all.steady_per_s, unit: 'deliveries/s' },
        );
        if (phases.has('isolation')) {
          console.log('webhooks: isolation, one of ten endpoints never answers…');
          const withSlow = [...Array.from({ length: 9 }, (_, i) => `/fast/b${i}`), '/slow'];
          const nine = await drain(env, config, rx, withSlow, c.events, (p) => p.startsWith('/fast/b'));
          details.isolation = nine;
          measures.push(
            { name: 'nine healthy endpoints, one timing out', value: nine.per_s, unit: 'deliveries/s' },
            { name: 'their share of the undisturbed rate', value: (100 * nine.per_s) / ((all.per_s * 9) / 10), unit: '%', ...t('min', 90) },
          );
        }
      }
      if (phases.has('e2e')) {
        console.log(`webhooks: end to end at ${c.rate} messages/s for ${c.durationS} s…`);
        const e2e = await endToEnd(env, rx, c);
        console.log(`webhooks: end-to-end stages (ms) ${JSON.stringify(e2e.stages)}`);
        details.end_to_end = e2e;
        measures.push(
          { name: `inbound → subscriber p50 at ${c.rate}/s`, value: e2e.p50_ms, unit: 'ms' },
          { name: `inbound → subscriber p99 at ${c.rate}/s`, value: e2e.p99_ms, unit: 'ms', ...t('max', 250) },
          { name: 'inbound messages received by the subscriber', value: e2e.received, unit: `of ${e2e.messages}` },
          { name: 'of which delivery row → subscriber, p99', value: e2e.stages.delivery_to_received.p99, unit: 'ms' },
        );
      }
      return { config: { ...c, phases: [...phases] }, measures, details };
    } finally {
      rx.close();
    }
  },
};

if (process.argv.includes('--receiver')) runReceiver();
