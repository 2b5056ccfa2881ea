// `ventros simulate waha --channel <id> [--rate <n/s>] [--duration <s>] …`: posts realistic WAHA
// webhooks (mixed engines and types, simulate-payloads.ts) to a running Ventros at a steady rate
// and prints how many were accepted or failed and the latency percentiles.
//
// The load is open-loop: request i is due at start + i/rate whatever happened to earlier ones, so
// a slow server shows up as latency (and in-flight requests), not as a quietly lower rate.
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { makeWahaGenerator } from './simulate-payloads.ts';

export type LoadOptions = {
  url: string;
  rate: number;
  durationS: number;
  /** The i-th request's body. */
  body: (i: number) => string | Buffer;
  headers?: Record<string, string>;
  /** Requests in flight at most; a request due beyond it waits for a free slot. */
  maxInflight?: number;
  /** Seconds of the same load sent first and not counted (connections opened, code compiled);
   * default 0. Its requests get no onResponse and no place in the result. */
  warmupS?: number;
  /** Called with each counted request's outcome (status 0: network error); sentAt is performance.now(). */
  onResponse?: (status: number, latencyMs: number, sentAt: number, body: string, i: number) => void;
};

export type LoadResult = {
  sent: number;
  accepted: number;
  /** Warm-up requests answered 2xx (not in the other figures). */
  warmupAccepted: number;
  failed: number;
  byStatus: Record<string, number>;
  elapsedS: number;
  /** Latencies in ms, ascending. */
  latencies: number[];
};

export function percentileOf(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1];
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const maxInflight = o.maxInflight ?? 256;
  const agent = new Agent({ connections: Math.min(maxInflight, 128), pipelining: 1, keepAliveTimeout: 30_000 });
  const warmupN = Math.round(o.rate * (o.warmupS ?? 0));
  const total = warmupN + Math.max(1, Math.round(o.rate * o.durationS));
  const latencies: number[] = [];
  const byStatus: Record<string, number> = {};
  let accepted = 0;
  let warmupAccepted = 0;
  let inflight = 0;
  let freed: (() => void) | undefined;

  const send = async (i: number) => {
    const payload = o.body(i);
    const sentAt = performance.now();
    let status = 0;
    let text = '';
    try {
      const res = await request(o.url, { method: 'POST', body: payload, headers: { 'content-type': 'application/json', ...o.headers }, dispatcher: agent });
      status = res.statusCode;
      text = await res.body.text();
    } catch (err) {
      text = (err as Error).message;
    }
    const ms = performance.now() - sentAt;
    if (i < warmupN) {
      if (status >= 200 && status < 300) warmupAccepted++;
      return;
    }
    latencies.push(ms);
    byStatus[status] = (byStatus[status] ?? 0) + 1;
    if (status >= 200 && status < 300) accepted++;
    o.onResponse?.(status, ms, sentAt, text, i);
  };

  const pending = new Set<Promise<void>>();
  const start = performance.now();
  let measuredFrom = start; // when the first counted request went out (warm-up excluded)
  for (let i = 0; i < total; i++) {
    const due = start + (i * 1000) / o.rate;
    const wait = due - performance.now();
    if (wait > 1) await new Promise((r) => setTimeout(r, wait));
    while (inflight >= maxInflight) await new Promise<void>((r) => (freed = r));
    if (i === warmupN) measuredFrom = performance.now();
    inflight++;
    const p = send(i).finally(() => {
      inflight--;
      pending.delete(p);
      freed?.();
      freed = undefined;
    });
    pending.add(p);
  }
  await Promise.all(pending);
  const elapsedS = (performance.now() - measuredFrom) / 1000;
  await agent.close();
  latencies.sort((a, b) => a - b);
  return { sent: total - warmupN, accepted, warmupAccepted, failed: total - warmupN - accepted, byStatus, elapsedS, latencies };
}

const USAGE = `usage: ventros simulate waha --channel <id> [--rate <n/s>] [--duration <s>] [--url <base>]
                               [--token <webhook token>] [--contacts <n>] [--messages-only]
  --channel   the channel id (its webhook URL is <base>/api/v1/webhooks/waha/<id>)
  --rate      webhooks per second (default 50)
  --duration  seconds (default 10)
  --url       base URL of Ventros (default http://HOST:PORT from the environment)
  --token     the channel's webhook token; else read through the API with VENTROS_API_KEY
              (a manager's key), else from the database at DATABASE_URL
  --contacts  distinct senders (default 200)
  --messages-only  new messages only (no acks or reactions)`;

async function resolveToken(base: string, channel: string, given?: string): Promise<string> {
  if (given) return given;
  const key = process.env.VENTROS_API_KEY;
  if (key) {
    const res = await request(`${base}/api/v1/channels/${channel}`, { headers: { authorization: `Bearer ${key}` } });
    const body = (await res.body.json()) as { webhook_url?: string | null; detail?: string };
    if (res.statusCode !== 200 || !body.webhook_url) throw new Error(`GET /channels/${channel} answered ${res.statusCode}: ${body.detail ?? 'no webhook_url (needs a manager key)'}`);
    return new URL(body.webhook_url).searchParams.get('token') ?? '';
  }
  if (process.env.DATABASE_URL) {
    const { connectPostgres } = await import('../db/postgres.ts');
    const db = connectPostgres({ url: process.env.DATABASE_URL, max: 1, applicationName: 'ventros-simulate' });
    try {
      const r = await db.query(`SELECT webhook_token FROM channels WHERE id = $1 AND deleted_at IS NULL`, [channel]);
      if (!r.rows[0]) throw new Error(`no channel ${channel} in the database`);
      return r.rows[0].webhook_token as string;
    } finally {
      await db.close();
    }
  }
  throw new Error('cannot find the webhook token: pass --token, or set VENTROS_API_KEY (or DATABASE_URL)');
}

export async function runSimulate(args: string[]): Promise<number> {
  const [provider, ...rest] = args;
  if (provider !== 'waha') {
    console.error(provider === undefined || provider === '--help' ? USAGE : `only "waha" can be simulated (got "${provider}")\n\n${USAGE}`);
    return provider === '--help' ? 0 : 2;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        channel: { type: 'string' }, token: { type: 'string' }, rate: { type: 'string', default: '50' }, duration: { type: 'string', default: '10' },
        url: { type: 'string' }, contacts: { type: 'string', default: '200' }, 'messages-only': { type: 'boolean', default: false }, help: { type: 'boolean' },
      },
    });
  } catch (err) {
    // An unknown option, or a value that starts with `-` (give it as --token=<value>).
    console.error(`${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) return console.log(USAGE), 0;
  const rate = Number(v.rate);
  const durationS = Number(v.duration);
  if (!v.channel || !(rate > 0) || !(durationS > 0) || !(Number(v.contacts) >= 1)) {
    console.error(USAGE);
    return 2;
  }
  const base = (v.url ?? `http://${process.env.HOST ?? '127.0.0.1'}:${process.env.PORT ?? '8080'}`).replace(/\/+$/, '');
  const token = await resolveToken(base, v.channel, v.token);
  const url = `${base}/api/v1/webhooks/waha/${v.channel}?token=${encodeURIComponent(token)}`;
  const gen = makeWahaGenerator({ contacts: Number(v.contacts), messagesOnly: v['messages-only'] });

  console.log(`posting WAHA webhooks to ${base}/api/v1/webhooks/waha/${v.channel}: ${rate}/s for ${durationS} s`);
  const r = await runLoad({ url, rate, durationS, body: () => JSON.stringify(gen.next().body) });
  const p = (q: number) => percentileOf(r.latencies, q).toFixed(1);
  console.log(`sent ${r.sent} in ${r.elapsedS.toFixed(1)} s (${(r.sent / r.elapsedS).toFixed(1)}/s)`);
  console.log(`accepted ${r.accepted}, failed ${r.failed}  (by status: ${Object.entries(r.byStatus).map(([s, n]) => `${s === '0' ? 'network error' : s}: ${n}`).join(', ')})`);
  console.log(`latency ms: p50 ${p(50)}  p90 ${p(90)}  p99 ${p(99)}  max ${p(100)}`);
  return r.failed === 0 ? 0 : 1;
}
