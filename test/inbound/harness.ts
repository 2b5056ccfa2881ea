// The whole service as the inbound tests drive it: startVentros on a fresh database and broker
// (the processor and the spill drainer run as in production), a tenant registered through the API,
// and helpers to create channels and post webhooks through the real HTTP ingress.
import { readFileSync, readdirSync } from 'node:fs';
import { createHmac } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance } from 'fastify';
import type { Broker, OutgoingMessage } from '../../src/broker/broker.ts';
import { loadConfig } from '../../src/config.ts';
import type { Database } from '../../src/db/database.ts';
import { startVentros, type Running } from '../../src/main.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { inboundEventsTotal } from '../../src/observability/metrics.ts';
import { defaultBrokerKind, makeTestBroker, type BrokerKind } from '../support/brokers.ts';
import { makeTestDb, onCleanup, uniqueName } from '../support/env.ts';

export const SECRET_KEY = 'inbound-tests-secret-key-0123456789abcdef';
export const FIXTURES = path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'fixtures');

export function fixture(name: string, provider = 'waha'): any {
  return JSON.parse(readFileSync(path.join(FIXTURES, provider, name.endsWith('.json') ? name : `${name}.json`), 'utf8'));
}

export function fixtureNames(provider = 'waha'): string[] {
  return readdirSync(path.join(FIXTURES, provider)).filter((f) => f.endsWith('.json')).sort();
}

/** A broker whose sends can be made to fail at once or to hang (the broker "down" or "blocked"). */
export type SwitchableBroker = Broker & { mode: 'up' | 'failing' | 'hanging'; namespace: string };

export function switchable(inner: Broker & { namespace: string }): SwitchableBroker {
  const b = Object.create(inner) as SwitchableBroker;
  b.mode = 'up';
  b.send = (queue: string, msgs: readonly OutgoingMessage[], opts?: { timeoutMs?: number }) => {
    if (b.mode === 'failing') return Promise.reject(new Error('broker is down (test)'));
    if (b.mode === 'hanging') return new Promise<void>(() => {});
    return inner.send(queue, msgs, opts);
  };
  return b;
}

export type Channel = { id: string; webhook_url: string; token: string; [k: string]: unknown };

export type Inbound = {
  running: Running;
  app: FastifyInstance;
  db: Database;
  /** Set on the services target: the test database, for other connections and processes. */
  dbUrl?: string;
  broker: SwitchableBroker;
  brokerKind: BrokerKind;
  key: string;
  projectId: string;
  api(method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE', url: string, body?: unknown, key?: string): Promise<{ status: number; json: any }>;
  createChannel(config?: Record<string, unknown>, extra?: Record<string, unknown>): Promise<Channel>;
  /** POSTs a WAHA webhook through the ingress. `body` objects are JSON-encoded; strings/Buffers go as they are. */
  post(channel: Channel, body: unknown, opts?: { headers?: Record<string, string>; token?: string | null; hmacKey?: string }): Promise<{ status: number; json: any }>;
};

export type StartOptions = {
  retryDelaysMs?: readonly number[];
  /** 'api' starts no processor (tests start their own). */
  role?: 'all' | 'api';
  /** Builds the broker the service uses (default: the target's test broker). */
  makeBroker?: (db: Database) => Promise<Broker & { namespace: string }>;
  /** Wraps the database the service uses (fault injection). */
  wrapDb?: (db: Database) => Database;
  /** Listen on 127.0.0.1 (a free port) instead of serving app.inject() only. */
  listen?: boolean;
  env?: Record<string, string>;
};

export async function startInbound(opts: StartOptions = {}): Promise<Inbound> {
  const { db: rawDb, url: dbUrl } = await makeTestDb();
  const db = opts.wrapDb ? opts.wrapDb(rawDb) : rawDb;
  const brokerKind = defaultBrokerKind();
  const retryDelaysMs = opts.retryDelaysMs ?? [100, 300, 1000];
  const inner = opts.makeBroker ? await opts.makeBroker(db) : await makeTestBroker(brokerKind, db, { retryDelaysMs });
  const broker = switchable(inner);
  // The fake providers (WAHA, the Graph API) listen on loopback.
  const config = loadConfig({
    LOG_LEVEL: 'silent', SECRET_KEY, PUBLIC_URL: 'https://crm.example.test', HOST: '127.0.0.1', PORT: '0',
    WAHA_ALLOW_PRIVATE_URLS: 'true', CLOUD_API_ALLOW_PRIVATE_URLS: 'true',
    // The broker's delays: the processor parks what is still unresolved on the broker's last attempt.
    CONSUMER_RETRY_DELAYS: retryDelaysMs.map((ms) => `${ms}ms`).join(','),
    REPLY_RETRY_DELAYS: retryDelaysMs.map((ms) => `${ms}ms`).join(','),
    ...opts.env,
  });
  // The fixtures are dated 2025: with the real clock the inactivity sweeper would end their
  // sessions at once. Its clock stands still here (its own tests move it).
  const running = await startVentros({
    config, db, broker, logger: silentLogger, listen: opts.listen ?? false, role: opts.role ?? 'all',
    sessionSweeper: { now: () => new Date('2000-01-01T00:00:00Z') },
  });
  onCleanup(() => running.stop());
  const app = running.app!;

  const name = uniqueName('u');
  const reg = await app.inject({
    method: 'POST',
    url: '/api/v1/auth/register',
    payload: { name, email: `${name}@example.com`, password: 'correct horse battery staple' },
  });
  if (reg.statusCode !== 201) throw new Error(`register answered ${reg.statusCode}: ${reg.body}`);
  const key: string = reg.json().api_key.key;
  const projectId: string = reg.json().project.id;

  const api: Inbound['api'] = async (method, url, body, k = key) => {
    const r = await app.inject({
      method,
      url: `/api/v1${url}`,
      headers: { authorization: `Bearer ${k}` },
      ...(body === undefined ? {} : { payload: body as object }),
    });
    return { status: r.statusCode, json: r.body ? JSON.parse(r.body) : undefined };
  };

  return {
    running,
    app,
    db,
    dbUrl,
    broker,
    brokerKind,
    key,
    projectId,
    api,
    async createChannel(config = {}, extra = {}) {
      const r = await api('POST', '/channels', {
        name: uniqueName('waha'),
        type: 'waha',
        config: { base_url: 'http://waha.example.test:3000', api_key: 'waha-api-key', session: 'loja-principal', ...config },
        ...extra,
      });
      if (r.status !== 201) throw new Error(`creating a channel answered ${r.status}: ${JSON.stringify(r.json)}`);
      const token = new URL(r.json.webhook_url).searchParams.get('token')!;
      return { ...r.json, token };
    },
    async post(channel, body, o = {}) {
      const payload = Buffer.isBuffer(body) ? body : Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
      const headers: Record<string, string> = { 'content-type': 'application/json', ...o.headers };
      if (o.hmacKey) headers['x-webhook-hmac'] = createHmac('sha512', o.hmacKey).update(payload).digest('hex');
      const token = o.token === undefined ? channel.token : o.token;
      const r = await app.inject({
        method: 'POST',
        url: `/api/v1/webhooks/waha/${channel.id}${token === null ? '' : `?token=${encodeURIComponent(token)}`}`,
        headers,
        payload,
      });
      let json: any;
      try {
        json = r.body ? JSON.parse(r.body) : undefined;
      } catch {
        json = r.body;
      }
      return { status: r.statusCode, json };
    },
  };
}

/** One counter value of inbound_events_total (process-wide: compare before and after). */
export async function inboundCount(labels: { provider?: string; event: string; result: string }): Promise<number> {
  const m = await inboundEventsTotal.get();
  return m.values
    .filter((v) => v.labels.event === labels.event && v.labels.result === labels.result && (v.labels.provider ?? 'waha') === (labels.provider ?? 'waha'))
    .reduce((a, v) => a + v.value, 0);
}

export async function messageByKey(db: Database, channelId: string, key: string): Promise<any | undefined> {
  const r = await db.query(`SELECT * FROM messages WHERE channel_id = $1 AND external_key = $2`, [channelId, key]);
  return r.rows[0];
}

export async function contactOf(db: Database, id: string): Promise<any> {
  return (await db.query(`SELECT * FROM contacts WHERE id = $1`, [id])).rows[0];
}

export async function count(db: Database, sql: string, params: unknown[] = []): Promise<number> {
  const r = await db.query<{ n: number }>(`SELECT count(*)::int AS n FROM (${sql}) x`, params);
  return Number(r.rows[0].n);
}

/** Event types the inbound pipeline emitted for an aggregate (consumers of them add their own). */
export const INBOUND_EVENT_TYPES = [
  'contact.created', 'contact.updated', 'session.started', 'message.received', 'message.sent', 'message.delivered',
  'message.read', 'message.played', 'message.failed', 'tracking.ad_click', 'channel.status_changed',
];

export async function eventTypes(db: Database, aggregateId: string): Promise<string[]> {
  const r = await db.query(`SELECT type FROM outbox WHERE aggregate_id = $1 AND type = ANY($2::text[]) ORDER BY seq`, [aggregateId, INBOUND_EVENT_TYPES]);
  return r.rows.map((x) => x.type as string);
}

/** A WAHA GOWS text message from `phone` (digits), with a unique id unless one is given. */
export function wahaText(phone: string, text: string, o: { id?: string; event?: string; ts?: number; fromMe?: boolean } = {}): any {
  const id = o.id ?? `3EB0${uniqueName('m').replace(/[^A-Za-z0-9]/g, '').toUpperCase()}`;
  const jid = `${phone}@s.whatsapp.net`;
  return {
    id: `evt_${id}`,
    timestamp: (o.ts ?? 1764460800) * 1000,
    event: o.event ?? 'message',
    session: 'loja-principal',
    me: { id: '5511900000000@c.us', pushName: 'Loja Exemplo' },
    payload: {
      id,
      timestamp: o.ts ?? 1764460800,
      from: o.fromMe ? '5511900000000@c.us' : `${phone}@c.us`,
      to: o.fromMe ? `${phone}@c.us` : '5511900000000@c.us',
      fromMe: o.fromMe ?? false,
      source: 'app',
      body: text,
      hasMedia: false,
      _data: {
        Info: { Chat: jid, Sender: o.fromMe ? '5511900000000@s.whatsapp.net' : jid, IsFromMe: o.fromMe ?? false, IsGroup: false, ID: id, Type: 'text', PushName: 'Cliente Teste' },
        Message: { conversation: text },
      },
    },
    environment: { version: '2025.9.5', engine: 'GOWS', tier: 'PLUS' },
  };
}
