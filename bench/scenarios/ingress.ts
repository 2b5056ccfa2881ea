// Scenario "ingress": the WAHA webhook ingress measured beside a bare Fastify handler that reads the
// same body and answers 200, in one run, with the same client (a worker thread):
//   1. maximum throughput of each (closed loop) at each of `--concurrency` connection counts, and
//      the ratio of their best figures — the bare handler peaks with few connections, the ingress,
//      whose every answer waits for a durable broker confirm, needs more to keep the CPU busy;
//      the ratio at each count is reported too. Each figure is the mean of two runs of half
//      `--duration`, in mirrored order, so that the machine's drift does not favour either side;
//   2. the ingress's latency at a fixed rate (open loop), p99 included; like the closed runs it
//      starts with `--warmup` seconds at the same rate that are not counted: the load worker is a
//      fresh thread whose connections and compiled code would otherwise be measured;
//   3. the floor under it: the broker's own confirm latency for the same sends at the same rate,
//      without HTTP — the ingress waits for that confirm before it answers.
// They run in the order 2, 3, 1 (see the comment on the latency phase).
// Ventros runs with role `api`: the ingress publishes to the raw queue with confirms (or spills),
// and no processor competes for the CPU. With no processor the raw queue only grows, so it is
// emptied after each phase: every phase starts on an empty queue, as in a running system.
import Fastify from 'fastify';
import { readFileSync } from 'node:fs';
import { monitorEventLoopDelay, performance } from 'node:perf_hooks';
import type { Broker } from '../../src/broker/broker.ts';
import { Queues } from '../../src/broker/topology.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { percentile, type Measure } from '../report.ts';
import type { Options, Scenario } from '../run.ts';
import type { BenchEnv } from '../env.ts';
import { startBenchVentros } from './inbound-setup.ts';
import { runLoadInWorker } from './load-worker.ts';

/**
 * The event-loop delay sampler's interval. Node records the time between its samples, interval
 * included (an idle loop shows about this much); the report gives the delay beyond it.
 */
const LOOP_SAMPLE_MS = 5;
const lateBy = (ns: number) => Math.max(0, Math.round((ns / 1e6 - LOOP_SAMPLE_MS) * 100) / 100);

const BODY = readFileSync(new URL('../../test/fixtures/waha/gows-text.json', import.meta.url), 'utf8');

/**
 * The floor under the ingress: the same body sent to the raw queue at the same rate straight
 * through the broker port (no HTTP, no lookup), open loop; each send's time to its confirm.
 */
async function brokerConfirmLatencies(broker: Broker, rate: number, seconds: number): Promise<number[]> {
  const body = Buffer.from(BODY);
  const total = Math.round(rate * seconds);
  const latencies: number[] = [];
  const pending: Array<Promise<void>> = [];
  const start = performance.now();
  for (let i = 0; i < total; ) {
    const due = Math.min(total, Math.floor(((performance.now() - start) * rate) / 1000) + 1);
    for (; i < due; i++) {
      const t0 = performance.now();
      pending.push(broker.send(Queues.inboundRaw, [{ messageId: uuidv7(), body, headers: {} }]).then(() => void latencies.push(performance.now() - t0)));
    }
    await new Promise((r) => setTimeout(r, 1));
  }
  await Promise.all(pending);
  return latencies.sort((a, b) => a - b);
}

async function startBare(): Promise<{ url: string; close(): Promise<void> }> {
  const app = Fastify({ logger: false, bodyLimit: 1024 * 1024 });
  app.removeAllContentTypeParsers();
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (_req, body, done) => done(null, body));
  app.post('/bare', async (req, reply) => reply.code(200).send({ status: 'queued', bytes: (req.body as Buffer).length }));
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return { url: `${url}/bare`, close: () => app.close() };
}

export const ingressScenario: Scenario = {
  name: 'ingress',
  description: 'WAHA ingress beside a bare Fastify handler: throughput ratio, then p99 at a fixed rate',
  async run(env: BenchEnv, o: Options) {
    const c = {
      concurrency: o.string('concurrency', '64,256').split(',').map(Number).filter((n) => n > 0),
      durationS: o.number('duration', 10),
      warmupS: o.number('warmup', 2),
      rate: o.number('rate', 2000),
      rateDurationS: o.number('rate-duration', 15),
      floorDurationS: o.number('floor-duration', 5),
    };
    if (c.concurrency.length === 0) throw new Error('--concurrency takes connection counts, e.g. 64,256');
    const ventros = await startBenchVentros(env, 'api');
    let failed = 0;
    const bare = await startBare();
    try {
      // Latency first, before the saturating phases below: they leave RabbitMQ writing what they
      // sent to its segment files for a while after, emptied queue or not (11–16 MB/s of disk
      // writes through the phases that followed them), and that is their cost, not this phase's.
      // (Run alone, the scenario starts on an idle broker; after `relay` and `webhooks` in a full
      // `npm run bench`, their writes may still be going on.)
      console.log(`ingress: ingress at ${c.rate}/s for ${c.warmupS} s not counted, then ${c.rateDurationS} s…`);
      // The server's event-loop delay during the fixed-rate phase: how much of the latency is the
      // process being busy (CPU, GC) rather than waiting for the broker.
      const loopDelay = monitorEventLoopDelay({ resolution: LOOP_SAMPLE_MS });
      loopDelay.enable();
      const l = await runLoadInWorker({ url: ventros.webhookUrl, mode: 'open', rate: c.rate, durationS: c.rateDurationS, warmupS: c.warmupS, concurrency: 512, fixedBody: BODY });
      loopDelay.disable();
      await ventros.emptyRawQueue();

      console.log(`ingress: broker confirms alone at ${c.rate}/s for ${c.floorDurationS} s…`);
      const floor = await brokerConfirmLatencies(ventros.broker, c.rate, c.floorDurationS);
      await ventros.emptyRawQueue();

      // The other floor: the bare handler at the same rate, from the same load thread — what HTTP,
      // the client and this machine's scheduling cost a request without the ingress's work.
      console.log(`ingress: bare handler at ${c.rate}/s for ${c.floorDurationS} s…`);
      const bareOpen = await runLoadInWorker({ url: bare.url, mode: 'open', rate: c.rate, durationS: c.floorDurationS, warmupS: c.warmupS, concurrency: 512, fixedBody: BODY });
      failed += bareOpen.failed;

      // The machine's speed drifts within tens of seconds (the bare handler alone has measured 12,600
      // and 21,800 req/s half a minute apart), and the two best figures usually come from different
      // connection counts, measured at different times. So every (handler, connections) pair runs
      // twice, in mirrored order — bare 64, ingress 64, bare 256, ingress 256, then ingress 256,
      // bare 256, ingress 64, bare 64 — for half the duration each: every pair's mean sits at the
      // run's midpoint, and a drift that is steady over the run cancels out of the ratio.
      const slots = c.concurrency.flatMap((connections) => [{ target: 'bare' as const, connections }, { target: 'ingress' as const, connections }]);
      const order = [...slots, ...[...slots].reverse()];
      const halfS = c.durationS / 2;
      const runs: Array<{ target: 'bare' | 'ingress'; connections: number; rps: number; failed: number; p99: number; loopBusy: number }> = [];
      for (const { target, connections } of order) {
        console.log(`ingress: ${target === 'bare' ? 'bare handler' : 'ingress'}, ${connections} connections for ${halfS} s…`);
        // The server's event-loop utilisation during an ingress run (its warm-up and the load
        // thread's start-up included, so a little low): below 100 % the ingress is waiting (for
        // confirms), not out of CPU on its thread.
        const elu = performance.eventLoopUtilization();
        const r = await runLoadInWorker({ url: target === 'bare' ? bare.url : ventros.webhookUrl, mode: 'closed', concurrency: connections, durationS: halfS, warmupS: c.warmupS, fixedBody: BODY });
        const loopBusy = 100 * performance.eventLoopUtilization(elu).utilization;
        if (target === 'ingress') await ventros.emptyRawQueue(); // no processor runs here: each phase starts on an empty queue
        failed += r.failed;
        runs.push({ target, connections, rps: r.count / r.measuredS, failed: r.failed, p99: percentile(r.latencies, 99), loopBusy });
      }
      const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
      const sweep = c.concurrency.map((connections) => {
        const b = runs.filter((x) => x.target === 'bare' && x.connections === connections);
        const i = runs.filter((x) => x.target === 'ingress' && x.connections === connections);
        return {
          connections,
          bare: mean(b.map((x) => x.rps)),
          ingress: mean(i.map((x) => x.rps)),
          bareRuns: b.map((x) => Math.round(x.rps)),
          ingressRuns: i.map((x) => Math.round(x.rps)),
          ingressFailed: i.reduce((n, x) => n + x.failed, 0),
          ingressP99: Math.max(...i.map((x) => x.p99)), // the worse of its two runs
          serverLoopBusy: mean(i.map((x) => x.loopBusy)),
        };
      });

      const bareRps = Math.max(...sweep.map((x) => x.bare));
      const ingressRps = Math.max(...sweep.map((x) => x.ingress));
      const targeted = env.database === 'postgres' && env.brokerKind === 'rabbitmq';
      const measures: Measure[] = [
        ...sweep.flatMap((x) => [
          { name: `bare handler, ${x.connections} connections`, value: x.bare, unit: 'req/s' },
          { name: `ingress, ${x.connections} connections`, value: x.ingress, unit: 'req/s' },
          { name: `ingress / bare, ${x.connections} connections`, value: (100 * x.ingress) / x.bare, unit: '%' },
          { name: `server event loop busy, ingress at ${x.connections}`, value: x.serverLoopBusy, unit: '%' },
        ]),
        { name: 'bare handler throughput (best)', value: bareRps, unit: 'req/s' },
        { name: 'ingress throughput (best)', value: ingressRps, unit: 'req/s' },
        { name: 'ingress / bare throughput (best of each)', value: (100 * ingressRps) / bareRps, unit: '%', ...(targeted ? { target: { kind: 'min', value: 50 } } : {}) },
        { name: `ingress p50 at ${c.rate}/s`, value: percentile(l.latencies, 50), unit: 'ms' },
        { name: `ingress p99 at ${c.rate}/s`, value: percentile(l.latencies, 99), unit: 'ms', ...(targeted && c.rate === 2000 ? { target: { kind: 'max', value: 10 } } : {}) },
        { name: `broker confirm alone, p50 at ${c.rate}/s`, value: percentile(floor, 50), unit: 'ms' },
        { name: `broker confirm alone, p99 at ${c.rate}/s`, value: percentile(floor, 99), unit: 'ms' },
        { name: `bare handler, p50 at ${c.rate}/s`, value: percentile(bareOpen.latencies, 50), unit: 'ms' },
        { name: `bare handler, p99 at ${c.rate}/s`, value: percentile(bareOpen.latencies, 99), unit: 'ms' },
        { name: `ingress max at ${c.rate}/s`, value: l.latencies[l.latencies.length - 1] ?? NaN, unit: 'ms' },
        { name: 'rate achieved', value: (l.count + l.failed) / l.measuredS, unit: 'req/s' },
        { name: 'failed requests (all phases)', value: failed + l.failed, unit: '' },
      ];
      return {
        config: c,
        measures,
        details: {
          closed: sweep,
          bare_open: { requests: bareOpen.count, failed: bareOpen.failed, p50_ms: percentile(bareOpen.latencies, 50), p99_ms: percentile(bareOpen.latencies, 99) },
          ingress_open: { requests: l.count, failed: l.failed, p50_ms: percentile(l.latencies, 50), p90_ms: percentile(l.latencies, 90), p99_ms: percentile(l.latencies, 99) },
          server_event_loop_delay_ms: { p50: lateBy(loopDelay.percentile(50)), p99: lateBy(loopDelay.percentile(99)), max: lateBy(loopDelay.max) },
          spilled: (await env.db.query<{ n: number }>('SELECT count(*)::int AS n FROM inbound_events')).rows[0].n,
        },
      };
    } finally {
      await bare.close();
      await ventros.stop();
    }
  },
};
