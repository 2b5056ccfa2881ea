// HTTP load from a worker thread, so the client has its own event loop (and CPU) instead of
// sharing the server's: a client in the server's thread would measure itself as much as the server.
//   closed: `concurrency` loops post back-to-back for warm-up + duration (maximum throughput);
//   open:   request i is due at start + i/rate (latency at a fixed rate; runLoad).
import { performance } from 'node:perf_hooks';
import { parentPort, Worker, workerData } from 'node:worker_threads';
import { Agent, request } from 'undici';
import { runLoad } from '../../src/inbound/simulate.ts';
import { makeWahaGenerator } from '../../src/inbound/simulate-payloads.ts';

export type LoadJob = {
  url: string;
  mode: 'closed' | 'open';
  durationS: number;
  warmupS?: number;
  concurrency?: number;
  rate?: number;
  /** A fixed body for every request, else generated distinct messages. */
  fixedBody?: string;
  contacts?: number;
};

export type LoadReport = {
  /** Completed requests within the measured window. */
  count: number;
  failed: number;
  measuredS: number;
  /** Latencies (ms) of the measured requests, ascending. */
  latencies: number[];
  /** Generated messages: bare message id → epoch ms the request was sent (open mode, measured
   * requests only). */
  sentAt: Array<[string, number]>;
  /** Every request answered 200, warm-up included: what the server took in. */
  acceptedAll: number;
};

const epoch = () => performance.timeOrigin + performance.now();

async function closed(job: LoadJob): Promise<LoadReport> {
  const c = job.concurrency ?? 64;
  const agent = new Agent({ connections: c, pipelining: 1, keepAliveTimeout: 30_000 });
  const gen = makeWahaGenerator({ messagesOnly: true, contacts: job.contacts ?? 500 });
  const body = () => job.fixedBody ?? JSON.stringify(gen.next().body);
  const t0 = performance.now();
  const measureFrom = t0 + (job.warmupS ?? 0) * 1000;
  const end = measureFrom + job.durationS * 1000;
  const latencies: number[] = [];
  let failed = 0;
  let acceptedAll = 0;
  await Promise.all(
    Array.from({ length: c }, async () => {
      while (performance.now() < end) {
        const sent = performance.now();
        let ok = false;
        try {
          const res = await request(job.url, { method: 'POST', body: body(), headers: { 'content-type': 'application/json' }, dispatcher: agent });
          await res.body.dump();
          ok = res.statusCode === 200;
        } catch {
          ok = false;
        }
        const done = performance.now();
        if (ok) acceptedAll++;
        if (sent >= measureFrom && done <= end) {
          if (ok) latencies.push(done - sent);
          else failed++;
        }
      }
    }),
  );
  await agent.close();
  latencies.sort((a, b) => a - b);
  return { count: latencies.length, failed, measuredS: job.durationS, latencies, sentAt: [], acceptedAll };
}

async function open(job: LoadJob): Promise<LoadReport> {
  const gen = makeWahaGenerator({ messagesOnly: true, contacts: job.contacts ?? 500 });
  const keys: string[] = [];
  const sentAt: Array<[string, number]> = [];
  const r = await runLoad({
    url: job.url,
    rate: job.rate ?? 100,
    durationS: job.durationS,
    warmupS: job.warmupS ?? 0,
    maxInflight: job.concurrency ?? 512,
    body: (i) => {
      if (job.fixedBody) return job.fixedBody;
      const g = gen.next();
      keys[i] = g.messageId!;
      return JSON.stringify(g.body);
    },
    onResponse: (status, _ms, sent, _text, i) => {
      if (status === 200 && keys[i]) sentAt.push([keys[i], performance.timeOrigin + sent]);
    },
  });
  // Latencies of the accepted requests, from each one's due time; the rate over the sends' span.
  return { count: r.accepted, failed: r.failed, measuredS: r.sendS, latencies: r.latencies, sentAt, acceptedAll: r.accepted + r.warmupAccepted };
}

if (parentPort && workerData?.job) {
  const job = workerData.job as LoadJob;
  (job.mode === 'closed' ? closed(job) : open(job)).then(
    (report) => parentPort!.postMessage({ report }),
    (err) => parentPort!.postMessage({ error: String(err?.stack ?? err) }),
  );
}

/** Runs one load job in a worker thread and resolves with its report. */
export function runLoadInWorker(job: LoadJob): Promise<LoadReport> {
  return new Promise((resolve, reject) => {
    // A worker does not inherit the TypeScript loader the bench runs under: register it first.
    const boot = `import('tsx/esm/api').then((m) => { m.register(); return import(${JSON.stringify(import.meta.url)}); })`;
    const w = new Worker(boot, { eval: true, workerData: { job } });
    w.once('message', (m: { report?: LoadReport; error?: string }) => (m.report ? resolve(m.report) : reject(new Error(m.error))));
    w.once('error', reject);
    w.once('exit', (code) => code !== 0 && reject(new Error(`load worker exited with ${code}`)));
  });
}

export { epoch };
