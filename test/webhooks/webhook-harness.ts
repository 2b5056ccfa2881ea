// The webhook tests' world: a fresh database and broker, the HTTP app, the outbox relay and the
// webhook worker (fan-out, dispatcher, scheduler) with test-sized timings, and helpers to create
// tenants, subscribe receivers and commit events.
import type { FastifyInstance } from 'fastify';
import type { Broker } from '../../src/broker/broker.ts';
import { allQueues } from '../../src/broker/topology.ts';
import { loadConfig, type Config } from '../../src/config.ts';
import type { Database } from '../../src/db/database.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { newEvent, type EventEnvelope } from '../../src/domain/events.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { buildApp } from '../../src/http/app.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { appendEvents } from '../../src/outbox/outbox.sql.ts';
import { startRelay } from '../../src/outbox/relay.ts';
import type { WebhookScheduler } from '../../src/webhooks/scheduler.ts';
import type { Component } from '../../src/deadline.ts';
import { startWebhookWorker, type WebhookWorkerOptions } from '../../src/webhooks/webhook-worker.ts';
import { call, register, type Reply } from '../http/harness.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, waitFor } from '../support/env.ts';

export const SECRET_KEY = 'k'.repeat(64);

export type World = {
  app: FastifyInstance;
  db: Database;
  broker: Broker & { namespace: string };
  config: Config;
  /** The database URL on services (for child processes). */
  dbUrl?: string;
  worker: Component[];
  /** Another HTTP app on the same database and broker, with other settings. */
  appWith(env: Record<string, string>): Promise<FastifyInstance>;
  /** Starts (another) webhook worker on this world's database and broker. */
  startWorker(opts?: Partial<WebhookWorkerOptions>): Promise<Component[]>;
  stopWorker(): Promise<void>;
};

export type WorldOptions = {
  env?: Record<string, string>;
  worker?: Partial<WebhookWorkerOptions> | false;
};

export async function startWorld(opts: WorldOptions = {}): Promise<World> {
  const { db, url } = await makeTestDb();
  const broker = await makeTestBroker(defaultBrokerKind(), db, { pollMs: 50 });
  // As main.ts does before anything publishes (RabbitMQ drops messages no queue is bound for).
  await broker.declareQueues(allQueues());
  const configWith = (env: Record<string, string> = {}) =>
    loadConfig({
      LOG_LEVEL: 'silent',
      WEBHOOK_ALLOW_PRIVATE_URLS: 'true',
      WEBHOOK_RETRY_SCHEDULE: '200ms,400ms',
      WEBHOOK_CONCURRENCY: '8',
      WEBHOOK_TIMEOUT_MS: '5000',
      ...opts.env,
      ...env,
    });
  const config = configWith();
  const appWith = async (env: Record<string, string>) => {
    const a = await buildApp({ config: configWith(env), db, broker, logger: silentLogger, secretKey: SECRET_KEY });
    await a.ready();
    onCleanup(() => a.close());
    return a;
  };
  const app = await appWith({});
  const relay = startRelay({ db, broker, pollMs: 50 });
  onCleanup(() => relay.stop());

  const started: Component[][] = [];
  const startWorker = async (extra: Partial<WebhookWorkerOptions> = {}) => {
    const components = await startWebhookWorker({
      db,
      broker,
      config,
      secretKey: SECRET_KEY,
      logger: silentLogger,
      schedulerPollMs: 50,
      // Test-sized cool-downs: an open circuit postpones deliveries for a fraction of a second.
      circuit: { failureThreshold: 5, cooldownMs: 300, maxCooldownMs: 1000 },
      ...extra,
    });
    started.push(components);
    return components;
  };
  const stopAll = async () => {
    while (started.length) for (const c of started.pop()!.reverse()) await c.stop();
  };
  onCleanup(stopAll);
  const worker = opts.worker === false ? [] : await startWorker(opts.worker || {});
  return { app, db, broker, config, ...(url && { dbUrl: url }), worker, appWith, startWorker, stopWorker: stopAll };
}

/** One full scheduler pass of the world's worker (deterministic, instead of waiting for polls). */
export async function schedulerPass(w: World): Promise<void> {
  const scheduler = w.worker.find((c) => c.name === 'webhook-scheduler') as WebhookScheduler | undefined;
  if (!scheduler) throw new Error('this world runs no scheduler');
  await scheduler.runOnce();
}

export type TestTenant = { projectId: string; key: string };

export async function makeTenant(w: World): Promise<TestTenant> {
  const r = await register(w.app);
  if (r.status !== 201) throw new Error(`register answered ${r.status}: ${r.body}`);
  return { projectId: r.json.project.id, key: r.json.api_key.key };
}

export function api(w: World, t: TestTenant, method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, body?: unknown): Promise<Reply> {
  return call(w.app, t.key, method, url, body === undefined ? {} : { body });
}

/**
 * Creates a subscription through the API; fails the test unless it answers 201. By default it
 * takes the events `emit` writes (contact.*), not `*`: registering a tenant emits events of its
 * own (pipeline.created) that would otherwise race into the counts.
 */
export async function subscribe(w: World, t: TestTenant, body: Record<string, unknown>): Promise<{ id: string; secret: string } & Record<string, any>> {
  const r = await api(w, t, 'POST', '/webhook-subscriptions', { events: ['contact.*'], ...body });
  if (r.status !== 201) throw new Error(`subscribe answered ${r.status}: ${r.body}`);
  return r.json;
}

export function contactCreated(projectId: string): EventEnvelope {
  const id = uuidv7();
  return newEvent('contact.created', {
    projectId,
    aggregateId: id,
    data: { contact_id: id, name: 'Ana Souza', phone: '+5511987654321', email: null, wa_id: '5511987654321', tags: ['lead'], custom_fields: {}, source: 'whatsapp', ad_attribution: null },
  });
}

/** A contact.updated event: for subscriptions that must not take what `emit` writes by default. */
export function contactUpdated(projectId: string): EventEnvelope {
  const id = uuidv7();
  return newEvent('contact.updated', { projectId, aggregateId: id, data: { contact_id: id, changes: { name: 'Ana' } } as never });
}

/** Commits events of a project to the outbox (the relay publishes them); returns them. */
export async function emit(w: World, projectId: string, n = 1, make: (p: string) => EventEnvelope = contactCreated): Promise<EventEnvelope[]> {
  const events = Array.from({ length: n }, () => make(projectId));
  await withTransaction(w.db, (tx) => appendEvents(tx, events));
  return events;
}

export type DeliveryRow = { id: string; status: string; attempts: number; event_id: string; next_attempt_at: Date | null; last_status_code: number | null; last_error: string | null };

export async function deliveriesOf(w: World, subscriptionId: string): Promise<DeliveryRow[]> {
  const r = await w.db.query<DeliveryRow>(
    `SELECT id, status, attempts, event_id, next_attempt_at, last_status_code, last_error FROM webhook_deliveries
     WHERE subscription_id = $1 ORDER BY created_at, id`,
    [subscriptionId],
  );
  return r.rows;
}

/**
 * Ends a claimed delivery's lease now, as if its dispatcher had stalled or died (a scheduler pass
 * then takes it back); fails unless the row was `sending`.
 */
export async function endLease(w: World, deliveryId: string): Promise<void> {
  const r = await w.db.query(`UPDATE webhook_deliveries SET locked_until = now() - interval '1 millisecond' WHERE id = $1 AND status = 'sending'`, [deliveryId]);
  if (r.rowCount !== 1) throw new Error(`delivery ${deliveryId} is not sending: its lease cannot be ended`);
}

/** Waits until the subscription has `n` deliveries, all in `status`; returns them. */
export async function waitForDeliveries(w: World, subscriptionId: string, n: number, status: string, timeoutMs = 15_000): Promise<DeliveryRow[]> {
  return waitFor(
    async () => {
      const rows = await deliveriesOf(w, subscriptionId);
      return rows.length === n && rows.every((r) => r.status === status) ? rows : undefined;
    },
    `${n} deliveries of ${subscriptionId} ${status}`,
    timeoutMs,
  );
}
