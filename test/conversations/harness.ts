// The whole service as the conversation tests drive it: startVentros on a fresh database and broker
// (inbound processor, sweeper, sender and consumers running as in production), an outbox relay so
// events reach the consumers, a tenant registered through the API, a fake WAHA server (a real HTTP
// server on 127.0.0.1 whose answers the test controls), and WAHA webhooks posted through the ingress.
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import type { Broker } from '../../src/broker/broker.ts';
import { loadConfig } from '../../src/config.ts';
import type { Database } from '../../src/db/database.ts';
import { startVentros, type Running } from '../../src/main.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { startRelay } from '../../src/outbox/relay.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, uniqueName } from '../support/env.ts';

export const SECRET_KEY = 'conversation-tests-secret-key-0123456789';
/** Provider time of the tests' conversations (WAHA timestamps are unix seconds). */
export const T0 = 1_764_460_800;
export const at = (seconds: number) => new Date((T0 + seconds) * 1000);

/** The sweeper's clock: fixed at T0 until a test moves it. */
export type FakeClock = { now(): Date; set(seconds: number): void };
export function fakeClock(): FakeClock {
  let t = at(0);
  return { now: () => t, set: (s) => (t = at(s)) };
}

export type Api = (method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, body?: unknown, key?: string) => Promise<{ status: number; json: any }>;

export type Tenant = { key: string; projectId: string; api: Api };

export type World = {
  running: Running;
  app: FastifyInstance;
  db: Database;
  broker: Broker;
  clock: FakeClock;
  tenant: Tenant;
  register(): Promise<Tenant>;
  createChannel(baseUrl: string, extra?: Record<string, unknown>, t?: Tenant): Promise<{ id: string; token: string }>;
  postWebhook(channel: { id: string; token: string }, body: unknown): Promise<number>;
  /** Starts another instance on the same database and broker (a second worker). */
  startAnother(): Promise<Running>;
  /** Stops the running instance, runs `whileDown`, then starts a new one in its place (a restart). */
  restart(whileDown?: () => Promise<void> | void): Promise<void>;
};

/**
 * `wrapDb`: the database as the running instance sees it (a test's fault injection); the world's
 * `db`, the broker and the test's own reads use the real one.
 */
export async function startWorld(opts: { clock?: FakeClock; env?: Record<string, string>; wrapDb?: (db: Database) => Database } = {}): Promise<World> {
  const { db } = await makeTestDb();
  const appDb = opts.wrapDb?.(db) ?? db;
  const broker = await makeTestBroker(defaultBrokerKind(), db, { retryDelaysMs: [100, 200] });
  const clock = opts.clock ?? { now: () => new Date(), set: () => {} };
  const config = loadConfig({
    LOG_LEVEL: 'silent',
    SECRET_KEY,
    PUBLIC_URL: 'https://crm.example.test',
    SESSION_TIMEOUT_MINUTES: '1',
    CONSUMER_RETRY_DELAYS: '100ms,200ms',
    REPLY_RETRY_DELAYS: '100ms,200ms',
    WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
    // The fake WAHA and Graph API listen on loopback.
    WAHA_ALLOW_PRIVATE_URLS: 'true',
    CLOUD_API_ALLOW_PRIVATE_URLS: 'true',
    ...opts.env,
  });
  const start = async () => {
    const r = await startVentros({ config, db: appDb, broker, logger: silentLogger, listen: false, sessionSweeper: { now: clock.now, intervalMs: 50 } });
    // Events reach the choreography consumers through the relay (harmless if main.ts starts one too).
    const relay = startRelay({ db: appDb, broker, pollMs: 50, backoffMs: { min: 20, max: 200 } });
    const stop = r.stop;
    const running: Running = { ...r, stop: async () => (await relay.stop(), await stop()) };
    onCleanup(() => running.stop());
    return running;
  };
  const state = { running: await start() };
  const app = () => state.running.app!;

  const register = async (): Promise<Tenant> => {
    const name = uniqueName('u');
    const reg = await app().inject({ method: 'POST', url: '/api/v1/auth/register', payload: { name, email: `${name}@example.com`, password: 'correct horse battery staple' } });
    if (reg.statusCode !== 201) throw new Error(`register answered ${reg.statusCode}: ${reg.body}`);
    const key: string = reg.json().api_key.key;
    const api: Api = async (method, url, body, k = key) => {
      const r = await app().inject({ method, url: `/api/v1${url}`, headers: { authorization: `Bearer ${k}` }, ...(body === undefined ? {} : { payload: body as object }) });
      return { status: r.statusCode, json: r.body ? JSON.parse(r.body) : undefined };
    };
    return { key, projectId: reg.json().project.id, api };
  };
  const tenant = await register();

  return {
    get running() {
      return state.running;
    },
    get app() {
      return app();
    },
    db,
    broker,
    clock,
    tenant,
    register,
    async createChannel(baseUrl, extra = {}, t = tenant) {
      const r = await t.api('POST', '/channels', {
        name: uniqueName('waha'),
        type: 'waha',
        config: { base_url: baseUrl, api_key: 'waha-secret-key', session: 'loja', ...((extra.config as object) ?? {}) },
        ...Object.fromEntries(Object.entries(extra).filter(([k]) => k !== 'config')),
      });
      if (r.status !== 201) throw new Error(`creating a channel answered ${r.status}: ${JSON.stringify(r.json)}`);
      return { id: r.json.id, token: new URL(r.json.webhook_url).searchParams.get('token')! };
    },
    async postWebhook(channel, body) {
      const r = await app().inject({
        method: 'POST',
        url: `/api/v1/webhooks/waha/${channel.id}?token=${encodeURIComponent(channel.token)}`,
        headers: { 'content-type': 'application/json' },
        payload: JSON.stringify(body),
      });
      if (r.statusCode !== 200) throw new Error(`ingress answered ${r.statusCode}: ${r.body}`);
      return r.statusCode;
    },
    startAnother: start,
    async restart(whileDown) {
      await state.running.stop();
      await whileDown?.();
      state.running = await start();
    },
  };
}

/** A WAHA GOWS `message` (or `message.any` when fromMe) with provider time T0 + `seconds`. */
export function wahaMessage(phone: string, text: string, o: { seconds?: number; id?: string; fromMe?: boolean; ts?: number } = {}): any {
  const id = o.id ?? `3EB0${uniqueName('m').replace(/[^A-Za-z0-9]/g, '').toUpperCase()}`;
  const ts = o.ts ?? T0 + (o.seconds ?? 0);
  const jid = `${phone}@s.whatsapp.net`;
  const me = '5511900000000';
  return {
    id: `evt_${uniqueName('e')}`,
    timestamp: ts * 1000,
    event: o.fromMe ? 'message.any' : 'message',
    session: 'loja',
    me: { id: `${me}@c.us`, pushName: 'Loja' },
    payload: {
      id,
      timestamp: ts,
      from: o.fromMe ? `${me}@c.us` : `${phone}@c.us`,
      to: o.fromMe ? `${phone}@c.us` : `${me}@c.us`,
      fromMe: o.fromMe ?? false,
      source: o.fromMe ? 'api' : 'app',
      body: text,
      hasMedia: false,
      _data: {
        Info: { Chat: jid, Sender: o.fromMe ? `${me}@s.whatsapp.net` : jid, IsFromMe: o.fromMe ?? false, IsGroup: false, ID: id, Type: 'text', PushName: 'Cliente' },
        Message: { conversation: text },
      },
    },
    environment: { version: '2025.9.5', engine: 'GOWS', tier: 'PLUS' },
  };
}

/** A WAHA message.ack of one of our messages (3 = READ, 2 = DEVICE). */
export function wahaAck(phone: string, id: string, ack: number): any {
  return {
    id: `evt_${uniqueName('a')}`,
    timestamp: Date.now(),
    event: 'message.ack',
    session: 'loja',
    me: { id: '5511900000000@c.us' },
    payload: { id, from: `${phone}@c.us`, to: '5511900000000@c.us', fromMe: true, ack, ackName: { 2: 'DEVICE', 3: 'READ' }[ack] ?? 'SERVER' },
    environment: { version: '2025.9.5', engine: 'GOWS', tier: 'PLUS' },
  };
}

// ---- fake WAHA ------------------------------------------------------------------------------

export type WahaCall = { method: string; path: string; headers: IncomingHttpHeaders; body: any };
export type WahaReply = { status: number; body?: unknown; headers?: Record<string, string> };

export type FakeWaha = {
  url: string;
  calls: WahaCall[];
  /** Replaces the answer to every call; return undefined for the default answer. */
  respond(fn: (call: WahaCall, n: number) => WahaReply | undefined | Promise<WahaReply | undefined>): void;
};

/** The id WAHA (WEBJS) gives a message it sent: `true_<chat>_<ID>`. */
export function sentId(chatId: string): string {
  return `true_${chatId}_3EB0${uniqueName('s').replace(/[^A-Za-z0-9]/g, '').toUpperCase()}`;
}

function defaultReply(call: WahaCall): WahaReply {
  if (call.path.startsWith('/api/send')) return { status: 201, body: { id: { fromMe: true, _serialized: sentId(call.body?.chatId ?? 'x@c.us') }, timestamp: Math.floor(Date.now() / 1000) } };
  if (call.method === 'GET' && call.path.startsWith('/api/sessions/')) return { status: 200, body: { name: 'loja', status: 'WORKING' } };
  return { status: 200, body: {} };
}

export async function startFakeWaha(): Promise<FakeWaha> {
  const calls: WahaCall[] = [];
  let responder: Parameters<FakeWaha['respond']>[0] = () => undefined;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', async () => {
      const text = Buffer.concat(chunks).toString('utf8');
      const call: WahaCall = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body: text ? JSON.parse(text) : undefined };
      calls.push(call);
      try {
        const r = (await responder(call, calls.length)) ?? defaultReply(call);
        res.writeHead(r.status, { 'content-type': 'application/json', ...r.headers });
        res.end(r.body === undefined ? '' : JSON.stringify(r.body));
      } catch (err) {
        res.writeHead(599);
        res.end(String(err));
      }
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.unref();
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    calls,
    respond: (fn) => (responder = fn),
  };
}

// ---- reads ----------------------------------------------------------------------------------

export async function rows(db: Database, sql: string, params: unknown[] = []): Promise<any[]> {
  return (await db.query(sql, params)).rows;
}

/** Events in the outbox for one aggregate (or of one type), oldest first. */
export async function events(db: Database, where: { aggregateId?: string; type?: string }): Promise<any[]> {
  return rows(
    db,
    `SELECT id, type, aggregate_id, data, occurred_at FROM outbox WHERE ($1::text IS NULL OR aggregate_id = $1) AND ($2::text IS NULL OR type = $2) ORDER BY seq`,
    [where.aggregateId ?? null, where.type ?? null],
  );
}
