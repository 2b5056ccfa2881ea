// Composition root: config → adapters → role. The only module that knows which adapter is in use.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import type { Broker } from './broker/broker.ts';
import { makePostgresBroker } from './broker/postgres-broker.ts';
import { connectRabbitBroker } from './broker/rabbitmq.ts';
import { allQueues } from './broker/topology.ts';
import { ConfigError, type Config } from './config.ts';
import type { Database } from './db/database.ts';
import { migrate } from './db/migrate.ts';
import type { Component } from './deadline.ts';
import { startRelay } from './outbox/relay.ts';
import { openPglite } from './db/pglite.ts';
import { connectPostgres } from './db/postgres.ts';
import { buildApp, buildOpsApp, closeHttp } from './http/app.ts';
import { makeChannelDirectory } from './inbound/channel-directory.ts';
import { keepRawDeadLetters } from './inbound/dead-letter-body.ts';
import { startSpillDrainer } from './inbound/drainer.ts';
import { startInboundProcessor } from './inbound/processor.ts';
import { makeLogger, type Logger } from './observability/logger.ts';
import { makeOutboundGaugeRefresher, makeQueueGaugesRefresher, makeSessionsGaugeRefresher, poolGaugeReader } from './observability/queue-gauges.ts';
import { startConversationWorker, type ConversationWorkerDeps } from './consumers/conversation-worker.ts';
import { startHousekeeping } from './timers/housekeeping.ts';
import { startWebhookWorker } from './webhooks/webhook-worker.ts';

export type Role = 'all' | 'api' | 'worker';

export type StartOptions = {
  config: Config;
  role?: Role;
  logger?: Logger;
  /** Tests pass their own database/broker; otherwise they are built from the config. */
  db?: Database;
  broker?: Broker;
  /** Listen on the configured port (default true); tests use app.inject() instead. */
  listen?: boolean;
  /** Tests only: the inactivity sweeper's clock and pass interval. */
  sessionSweeper?: ConversationWorkerDeps['sweeper'];
};

export type Running = {
  config: Config;
  db: Database;
  broker: Broker;
  /** The HTTP app: the whole API (roles api, all) or only health and metrics (worker). */
  app: FastifyInstance;
  /** Base URL the HTTP server listens on, when it listens. */
  url?: string;
  secretKey: string;
  stop(): Promise<void>;
};

export async function openDatabase(config: Config): Promise<Database> {
  return config.databaseUrl ? connectPostgres({ url: config.databaseUrl, max: config.databasePoolMax }) : openPglite(path.join(config.dataDir, 'pglite'));
}

export async function openBroker(config: Config, db: Database, logger: Logger): Promise<Broker> {
  return config.amqpUrl
    ? connectRabbitBroker({ url: config.amqpUrl, db, retryDelaysMs: config.consumerRetryDelaysMs, logger, shutdownTimeoutMs: config.shutdownTimeoutMs })
    : makePostgresBroker({ db, retryDelaysMs: config.consumerRetryDelaysMs, logger, shutdownTimeoutMs: config.shutdownTimeoutMs });
}

/** SECRET_KEY, or in embedded mode a key generated once and kept under DATA_DIR. */
export function resolveSecretKey(config: Config): string {
  if (config.secretKey) return config.secretKey;
  const file = path.join(config.dataDir, 'secret.key');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  mkdirSync(config.dataDir, { recursive: true });
  const key = randomBytes(32).toString('hex');
  writeFileSync(file, key + '\n', { mode: 0o600 });
  return key;
}

export async function startVentros(opts: StartOptions): Promise<Running> {
  const { config } = opts;
  const role = opts.role ?? 'all';
  const logger = opts.logger ?? makeLogger(config.logLevel, { role });
  if (role !== 'all' && !config.databaseUrl && !opts.db) {
    throw new ConfigError('DATABASE_URL', `role "${role}" needs it: the embedded database lives in one process, so run --role all`);
  }
  const secretKey = resolveSecretKey(config);
  const db = opts.db ?? (await openDatabase(config));
  let broker: Broker;
  try {
    const applied = await migrate(db);
    if (applied.length) logger.info({ applied }, 'migrations applied');
    broker = opts.broker ?? (await openBroker(config, db, logger));
  } catch (err) {
    // A start that fails here leaves nothing open behind it (the embedded database's lock included).
    if (!opts.db) await db.close().catch(() => undefined);
    throw err;
  }
  // One channel cache per process, shared by the ingress and the inbound processor; changes made
  // by any process reach it through NOTIFY.
  const channelDirectory = makeChannelDirectory({ db, secretKey, defaultSessionTimeoutMinutes: config.sessionTimeoutMinutes, logger });
  // Before the queues are declared: on RabbitMQ that starts draining crashed messages too.
  keepRawDeadLetters(broker, db);
  try {
    await broker.declareQueues(allQueues());
    await channelDirectory.start();
  } catch (err) {
    await channelDirectory.stop().catch(() => undefined);
    if (!opts.broker) await broker.close().catch(() => undefined);
    if (!opts.db) await db.close().catch(() => undefined);
    throw err;
  }

  // What outlasts the consumers and requests (stopped after them, last first): the channel cache
  // and the outbox relay, so events committed by the last handlers and requests still get published.
  const outlasting: Component[] = [{ name: 'channel-directory', stop: () => channelDirectory.stop() }];
  const components: Component[] = [];
  let app: FastifyInstance | undefined;
  let stopping: Promise<void> | undefined;
  const stop = () =>
    (stopping ??= (async () => {
      // One deadline for the whole stop (SHUTDOWN_TIMEOUT_MS): intake stops everywhere at once —
      // the HTTP server and every consumer — and the work under way has until then. Each waiting
      // in turn for a time of its own added up past the CLI's forced exit (SHUTDOWN_TIMEOUT_MS +
      // 5 s): a request held open, then webhook attempts hanging at their endpoint, took 1.5 times
      // the timeout, and the attempts were not handed back. Requests still open after half the time
      // (a slow download, a client sending its body a byte at a time) have their connections closed.
      const deadline = Date.now() + config.shutdownTimeoutMs;
      const stopOne = (c: Component) => c.stop(deadline).catch((err) => logger.error({ err, component: c.name }, 'stopping component failed'));
      await Promise.all([app && closeHttp(app, config.shutdownTimeoutMs / 2, logger), ...components.map(stopOne)]);
      for (const c of [...outlasting].reverse()) await stopOne(c);
      if (!opts.broker) await broker.close().catch((err) => logger.error({ err }, 'closing broker failed'));
      if (!opts.db) await db.close().catch((err) => logger.error({ err }, 'closing database failed'));
    })());

  let url: string | undefined;
  try {
    // Every role serves HTTP: api and all the whole API, worker only health and metrics. The port
    // comes first: a process that cannot serve its probes (the port is taken) must not go on working
    // unseen, so it stops before any consumer starts.
    const refreshQueues = makeQueueGaugesRefresher(broker, allQueues().map((q) => q.name));
    const refreshSessions = makeSessionsGaugeRefresher(db);
    const refreshOutbound = makeOutboundGaugeRefresher(db);
    const readPool = poolGaugeReader(db);
    // Each is tried whatever the others do: a broker that cannot answer leaves sessions_active
    // fresh, and the other way round.
    const refreshMetrics = async () => {
      readPool();
      await Promise.allSettled([refreshQueues(), refreshSessions(), refreshOutbound()]);
    };
    const appDeps = { config, db, broker, logger, secretKey, channelDirectory, refreshMetrics };
    app = role === 'worker' ? await buildOpsApp(appDeps) : await buildApp(appDeps);
    if (opts.listen !== false) url = await app.listen({ port: config.port, host: config.host });
    else await app.ready();

    if (role === 'all' || role === 'worker') {
      // The relay outlasts the consumers below: events they commit while they finish their
      // in-flight work still get published before the process exits.
      const relay = startRelay({ db, broker, pollMs: config.outboxPollMs, logger });
      outlasting.push({ name: 'outbox-relay', stop: (deadline) => relay.stop(deadline) });
      components.push(await startInboundProcessor({ db, broker, logger, channels: channelDirectory }, { retryDelaysMs: config.consumerRetryDelaysMs }));
      components.push(startSpillDrainer({ db, broker, logger }));
      components.push(...(await startWebhookWorker({ db, broker, config, secretKey, logger })));
      components.push(...(await startConversationWorker({ db, broker, config, logger, channels: channelDirectory, sweeper: opts.sessionSweeper })));
      components.push(startHousekeeping({ db, logger, webhookRetentionDays: config.webhookRetentionDays, eventRetentionDays: config.eventRetentionDays }));
    }
  } catch (err) {
    // Whatever started is stopped again: a failed start leaves nothing running behind it.
    await stop();
    throw err;
  }
  if (url) logger.info({ url, role, database: db.kind, broker: broker.kind }, 'ventros listening');

  return { config, db, broker, app, url, secretKey, stop };
}
