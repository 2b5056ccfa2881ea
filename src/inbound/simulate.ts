// `ventros simulate waha --channel <id> [--rate <n/s>] [--duration <s>] …`: posts realistic WAHA
// webhooks (mixed engines and types, simulate-payloads.ts) to a running Ventros at a steady rate
// and prints how many were accepted or failed and the latency percentiles.
//
// The load is open-loop: request i is due at start + i/rate whatever happened to earlier ones, so
// a slow server shows up as latency, not as a quietly lower rate. A request's latency runs from
// the time it was due, not from when it went out: one held back (the in-flight cap, a busy
// client) counts its wait, which is what its sender would have seen (no coordinated omission).
import { createHmac } from 'node:crypto';
import { parseArgs } from 'node:util';
import { performance } from 'node:perf_hooks';
import { Agent, request } from 'undici';
import { errorText } from '../broker/broker.ts';
import { ConfigError, listenAddress, localBaseUrl } from '../config.ts';
import { makeStoppableSleep } from '../timers/stoppable-sleep.ts';
import { makeWahaGenerator } from './simulate-payloads.ts';
import { parseHttpUrl, parseUrl } from '../url.ts';

export type LoadOptions = {
  url: string;
  rate: number;
  durationS: number;
  /** The i-th request's body. */
  body: (i: number) => string | Buffer;
  /** Headers for a body, besides its content type. */
  headers?: (body: string | Buffer) => Record<string, string>;
  /** Requests in flight at most; a request due beyond it waits for a free slot (and counts the wait). */
  maxInflight?: number;
  /** Seconds of the same load sent first and not counted (connections opened, code compiled);
   * default 0. Its requests get no onResponse and no place in the result. */
  warmupS?: number;
  /** A request not answered in full this long after it went out (waiting for a connection included)
   * fails as a timeout. Default 30 s. */
  timeoutMs?: number;
  /** Aborted: no further request is sent; those in flight are awaited (each within timeoutMs). */
  signal?: AbortSignal;
  /** Called with each counted request's outcome (status 0: no answer); startAt is the
   * performance.now() time its latency is counted from (its due time, or its send if earlier). */
  onResponse?: (status: number, latencyMs: number, startAt: number, body: string, i: number) => void;
};

export type LoadResult = {
  /** Counted requests sent (fewer than planned when the run was interrupted). */
  sent: number;
  planned: number;
  accepted: number;
  /** Warm-up requests answered 2xx (not in the other figures). */
  warmupAccepted: number;
  failed: number;
  /** Counted requests by HTTP status, or `timeout` / `network error` when none came. */
  byStatus: Record<string, number>;
  /** The first counted failure: its status (or error) and what the server or the network said. */
  firstFailure?: string;
  /** Seconds over which the counted requests went out (their schedule's span, or longer if late). */
  sendS: number;
  /** Seconds from the first counted request's due time to the last answer. */
  elapsedS: number;
  /** The furthest a counted request went out behind its due time, in ms. */
  maxLagMs: number;
  /** Latencies in ms of the accepted requests, from their due time, ascending. */
  latencies: number[];
  interrupted: boolean;
};

export function percentileOf(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  return sorted[Math.min(sorted.length, Math.max(1, Math.ceil((p / 100) * sorted.length))) - 1];
}

const DEFAULT_TIMEOUT_MS = 30_000;

/** The request's own deadline (AbortSignal.timeout), or undici's connect timeout before it. */
function failureName(err: unknown): string {
  const e = err as { code?: unknown; name?: unknown } | null;
  return e?.name === 'TimeoutError' || e?.code === 'UND_ERR_CONNECT_TIMEOUT' ? 'timeout' : 'network error';
}

export async function runLoad(o: LoadOptions): Promise<LoadResult> {
  const maxInflight = o.maxInflight ?? 256;
  const timeoutMs = o.timeoutMs ?? DEFAULT_TIMEOUT_MS;
  const agent = new Agent({ connections: Math.min(maxInflight, 128), pipelining: 1, keepAliveTimeout: 30_000 });
  const rest = makeStoppableSleep();
  if (o.signal?.aborted) rest.stop();
  else o.signal?.addEventListener('abort', () => rest.stop(), { once: true });
  const warmupN = Math.round(o.rate * (o.warmupS ?? 0));
  const planned = Math.max(1, Math.round(o.rate * o.durationS));
  const total = warmupN + planned;
  const latencies: number[] = [];
  const byStatus: Record<string, number> = {};
  let accepted = 0;
  let warmupAccepted = 0;
  let sent = 0;
  let firstFailure: string | undefined;
  let maxLagMs = 0;
  let lastSend = 0;
  let lastAnswer = 0;
  let inflight = 0;
  let freed: (() => void) | undefined;

  const send = async (i: number, dueAt: number) => {
    const payload = o.body(i);
    const startAt = Math.min(dueAt, performance.now()); // sent up to 1 ms early: from the send
    let status = 0;
    let outcome: string;
    let text: string;
    try {
      // The whole request under one deadline: a connection to wait for, the answer, its body.
      const signal = AbortSignal.timeout(timeoutMs);
      const res = await request(o.url, { method: 'POST', body: payload, headers: { 'content-type': 'application/json', ...o.headers?.(payload) }, dispatcher: agent, signal });
      text = await res.body.text();
      status = res.statusCode;
      outcome = String(status);
    } catch (err) {
      // No answer, or not all of it: a failure, whatever a status line said.
      status = 0;
      outcome = failureName(err);
      text = errorText(err);
    }
    const end = performance.now();
    if (i < warmupN) {
      if (status >= 200 && status < 300) warmupAccepted++;
      return;
    }
    lastAnswer = Math.max(lastAnswer, end);
    const ms = end - startAt;
    byStatus[outcome] = (byStatus[outcome] ?? 0) + 1;
    if (status >= 200 && status < 300) {
      accepted++;
      latencies.push(ms);
    } else {
      firstFailure ??= `${outcome}: ${text.slice(0, 300)}`;
    }
    o.onResponse?.(status, ms, startAt, text, i);
  };

  const pending = new Set<Promise<void>>();
  const start = performance.now();
  const measuredFrom = start + (warmupN * 1000) / o.rate; // the first counted request's due time
  for (let i = 0; i < total && !rest.stopped; i++) {
    const dueAt = start + (i * 1000) / o.rate;
    const wait = dueAt - performance.now();
    if (wait > 1) await rest.sleep(wait);
    while (inflight >= maxInflight && !rest.stopped) await new Promise<void>((r) => (freed = r));
    if (rest.stopped) break;
    if (i >= warmupN) {
      const now = performance.now();
      sent++;
      maxLagMs = Math.max(maxLagMs, now - dueAt);
      lastSend = now;
    }
    inflight++;
    const p = send(i, dueAt).finally(() => {
      inflight--;
      pending.delete(p);
      freed?.();
      freed = undefined;
    });
    pending.add(p);
  }
  await Promise.all(pending);
  await agent.close();
  latencies.sort((a, b) => a - b);
  return {
    sent,
    planned,
    accepted,
    warmupAccepted,
    failed: sent - accepted,
    byStatus,
    firstFailure,
    // The schedule gives each request 1/rate; requests that went out late stretch the span.
    sendS: sent === 0 ? 0 : Math.max(sent / o.rate, (lastSend - measuredFrom) / 1000 + 1 / o.rate),
    elapsedS: sent === 0 ? 0 : (lastAnswer - measuredFrom) / 1000,
    maxLagMs,
    latencies,
    interrupted: sent < planned,
  };
}

const USAGE = `usage: ventros simulate waha --channel <id> [--rate <n/s>] [--duration <s>] [--url <base>]
                               [--token <webhook token>] [--hmac-key <key>] [--contacts <n>]
                               [--timeout <s>] [--messages-only]
  --channel   the channel id, a UUID (its webhook URL is <base>/api/v1/webhooks/waha/<id>)
  --rate      webhooks per second (default 50)
  --duration  seconds (default 10)
  --url       base URL of Ventros, http(s)://host[:port] (default http://HOST:PORT from the environment,
              a wildcard HOST as 127.0.0.1)
  --token     the channel's webhook token, used as given (nothing is looked up); else read through
              the API with VENTROS_API_KEY (a manager's key), else from the database at DATABASE_URL
  --hmac-key  the channel's hmac_key, to sign each body (X-Webhook-Hmac) as WAHA does; needed when
              the channel has one
  --contacts  distinct senders (default 200)
  --timeout   seconds a webhook may take to be answered before it counts as failed (default 30)
  --messages-only  new messages only (no acks or reactions)
Exit codes: 0 every webhook accepted, 1 some failed, 2 bad usage or configuration, 130 interrupted
(Ctrl-C stops sending, waits for the answers in flight and prints what it has).`;

/** A refusal the user can act on: printed as one line, no stack. */
class SimulateError extends Error {
  constructor(message: string, readonly exitCode: 1 | 2) {
    super(message);
  }
}

type Target = { token: string; hmacNeeded: boolean | undefined };

/** The channel's webhook token (and whether it signs), from the flag, else the API, else the database. */
async function resolveTarget(base: string, channel: string, given?: string): Promise<Target> {
  // A token given is used as is: a VENTROS_API_KEY left over from another project, or a database
  // that is not this server's, must not stand in the way of one that works.
  if (given) return { token: given, hmacNeeded: undefined };
  const key = process.env.VENTROS_API_KEY;
  if (key) {
    let status: number;
    let body: { type?: string; webhook_url?: string | null; secrets_set?: string[]; detail?: string };
    try {
      const res = await request(`${base}/api/v1/channels/${encodeURIComponent(channel)}`, { headers: { authorization: `Bearer ${key}` }, headersTimeout: 10_000, bodyTimeout: 10_000 });
      status = res.statusCode;
      const text = await res.body.text();
      try {
        body = JSON.parse(text) as typeof body;
      } catch {
        throw new SimulateError(`GET ${base}/api/v1/channels/${channel} answered ${status} with something that is not JSON: is ${base} a Ventros?`, 1);
      }
    } catch (err) {
      if (err instanceof SimulateError) throw err;
      throw new SimulateError(`cannot reach ${base}: ${errorText(err)}`, 1);
    }
    if (status !== 200) throw new SimulateError(`GET /channels/${channel} answered ${status}: ${body.detail ?? 'no detail'}`, 2);
    if (body.type !== 'waha') throw new SimulateError(`channel ${channel} is a ${body.type ?? 'unknown'} channel; only WAHA channels can be simulated`, 2);
    const token = body.webhook_url ? (parseUrl(body.webhook_url)?.searchParams.get('token') ?? null) : null;
    if (!token) throw new SimulateError(`GET /channels/${channel} shows no webhook token (needs a manager's key); pass --token`, 2);
    return { token, hmacNeeded: body.secrets_set?.includes('hmac_key') ?? undefined };
  }
  if (process.env.DATABASE_URL) {
    const { connectPostgres } = await import('../db/postgres.ts');
    const db = connectPostgres({ url: process.env.DATABASE_URL, max: 1, applicationName: 'ventros-simulate' });
    try {
      const r = await db.query<{ type: string; webhook_token: string }>(`SELECT type, webhook_token FROM channels WHERE id = $1::uuid AND deleted_at IS NULL`, [channel]);
      const row = r.rows[0];
      if (!row) throw new SimulateError(`no channel ${channel} in the database at DATABASE_URL`, 2);
      if (row.type !== 'waha') throw new SimulateError(`channel ${channel} is a ${row.type} channel; only WAHA channels can be simulated`, 2);
      return { token: row.webhook_token, hmacNeeded: undefined };
    } catch (err) {
      if (err instanceof SimulateError) throw err;
      throw new SimulateError(`cannot read the channel from DATABASE_URL: ${errorText(err)}`, 1);
    } finally {
      await db.close();
    }
  }
  throw new SimulateError('cannot find the webhook token: pass --token, or set VENTROS_API_KEY (or DATABASE_URL)', 2);
}

/** A decimal number within (0, max], or a message naming the flag. */
function positive(flag: string, value: string, what: string, max: number, integer = false): number | string {
  const n = /^\d+(\.\d+)?$/.test(value) ? Number(value) : NaN;
  if (!(n > 0) || n > max || (integer && !Number.isInteger(n))) {
    return `--${flag} must be ${integer ? 'a whole number' : 'a number'} of ${what} above 0 and at most ${max} (got "${value}")`;
  }
  return n;
}

/** A channel id as the API writes it: a hyphenated UUID, in any case. */
const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** The server's base URL: --url, else where this machine reaches HOST:PORT (as the server reads them). */
function baseUrl(given: string | undefined): { base: string } | { problem: string } {
  if (given !== undefined) {
    const base = checkedBase(given.replace(/\/+$/, ''));
    return base ? { base } : { problem: `--url must be an http(s) URL such as http://127.0.0.1:8080 (got "${given}")` };
  }
  let host: string;
  let port: number;
  try {
    ({ host, port } = listenAddress(process.env));
  } catch (err) {
    if (!(err instanceof ConfigError)) throw err;
    return { problem: `${err.message}; or pass --url` };
  }
  const base = port === 0 ? undefined : localBaseUrl(host, port);
  return base ? { base } : { problem: `cannot reach HOST "${host}" PORT ${port} from here: pass --url` };
}

function checkedBase(base: string): string | undefined {
  const u = parseHttpUrl(base);
  return u && u.hostname && !u.search && !u.hash ? base : undefined;
}

export async function runSimulate(args: string[]): Promise<number> {
  const [provider, ...rest] = args;
  if (provider === '--help' || provider === '-h' || provider === 'help') return console.log(USAGE), 0;
  if (provider !== 'waha') {
    console.error(provider === undefined ? USAGE : `only "waha" can be simulated (got "${provider}")\n\n${USAGE}`);
    return 2;
  }
  let parsed;
  try {
    parsed = parseArgs({
      args: rest,
      options: {
        channel: { type: 'string' }, token: { type: 'string' }, 'hmac-key': { type: 'string' }, rate: { type: 'string', default: '50' },
        duration: { type: 'string', default: '10' }, url: { type: 'string' }, contacts: { type: 'string', default: '200' },
        timeout: { type: 'string', default: '30' }, 'messages-only': { type: 'boolean', default: false }, help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    // An unknown option, or a value that starts with `-` (give it as --token=<value>).
    console.error(`${err instanceof Error ? err.message : String(err)}\n\n${USAGE}`);
    return 2;
  }
  const v = parsed.values;
  if (v.help) return console.log(USAGE), 0;
  const rate = positive('rate', v.rate, 'webhooks per second', 100_000);
  const durationS = positive('duration', v.duration, 'seconds', 86_400);
  const contacts = positive('contacts', v.contacts, 'senders', 1_000_000, true);
  const timeoutS = positive('timeout', v.timeout, 'seconds', 3_600);
  const where = baseUrl(v.url);
  const base = 'base' in where ? where.base : undefined;
  const problems = [
    !v.channel?.trim()
      ? '--channel is required: the id of a WAHA channel'
      : !UUID.test(v.channel) ? `--channel must be a channel id, a UUID such as 0190aaaa-0000-7000-8000-000000000000 (got "${v.channel}")` : undefined,
    ...[rate, durationS, contacts, timeoutS].filter((x) => typeof x === 'string'),
    'problem' in where ? where.problem : undefined,
    v.token === '' ? '--token must not be empty' : undefined,
    v['hmac-key'] === '' ? '--hmac-key must not be empty' : undefined,
  ].filter((x): x is string => x !== undefined);
  if (problems.length > 0 || typeof rate !== 'number' || typeof durationS !== 'number' || typeof contacts !== 'number' || typeof timeoutS !== 'number' || !base || !v.channel) {
    console.error(`${problems.join('\n')}\n\n${USAGE}`);
    return 2;
  }
  let target: Target;
  try {
    target = await resolveTarget(base, v.channel, v.token);
  } catch (err) {
    if (!(err instanceof SimulateError)) throw err;
    console.error(`ventros simulate: ${err.message}`);
    return err.exitCode;
  }
  const hmacKey = v['hmac-key'];
  if (target.hmacNeeded && !hmacKey) {
    console.error(`ventros simulate: channel ${v.channel} has an hmac_key, and every webhook must be signed with it: pass --hmac-key`);
    return 2;
  }
  const url = `${base}/api/v1/webhooks/waha/${encodeURIComponent(v.channel)}?token=${encodeURIComponent(target.token)}`;
  const gen = makeWahaGenerator({ contacts, messagesOnly: v['messages-only'] });
  const sign = hmacKey ? (body: string | Buffer) => ({ 'x-webhook-hmac': createHmac('sha512', hmacKey).update(body).digest('hex'), 'x-webhook-hmac-algorithm': 'sha512' }) : undefined;

  const stop = new AbortController();
  const interrupt = () => {
    if (stop.signal.aborted) process.exit(130); // a second Ctrl-C: leave at once
    console.log('interrupted: no more webhooks are sent; waiting for the answers in flight (Ctrl-C again to leave now)');
    stop.abort();
  };
  process.on('SIGINT', interrupt);
  console.log(`posting WAHA webhooks to ${base}/api/v1/webhooks/waha/${v.channel}: ${rate}/s for ${durationS} s`);
  let r: LoadResult;
  try {
    r = await runLoad({ url, rate, durationS, timeoutMs: timeoutS * 1000, signal: stop.signal, headers: sign, body: () => JSON.stringify(gen.next().body) });
  } finally {
    process.off('SIGINT', interrupt);
  }
  const p = (q: number) => (r.latencies.length ? percentileOf(r.latencies, q).toFixed(1) : '-');
  const sentLine = `sent ${r.sent}${r.interrupted ? ` of ${r.planned} (interrupted)` : ''} in ${r.sendS.toFixed(1)} s (${(r.sendS > 0 ? r.sent / r.sendS : 0).toFixed(1)}/s)`;
  console.log(`${sentLine}, at most ${r.maxLagMs.toFixed(1)} ms behind schedule`);
  const statuses = Object.entries(r.byStatus).map(([s, n]) => `${s}: ${n}`).join(', ');
  console.log(`accepted ${r.accepted}, failed ${r.failed}  (by status: ${statuses || 'none'})`);
  if (r.firstFailure) console.log(`first failure: ${r.firstFailure}`);
  console.log(`latency ms (accepted, from the time each was due): p50 ${p(50)}  p90 ${p(90)}  p99 ${p(99)}  max ${p(100)}`);
  if (r.interrupted) return 130;
  return r.failed === 0 ? 0 : 1;
}
