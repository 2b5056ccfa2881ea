// The Fastify application: conventions shared by every route (request ids, problem+json errors,
// metrics, OpenAPI, body cap, CORS), then the route files. No SQL here: routes call services.
import Fastify, { LogController, type FastifyBaseLogger, type FastifyError, type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import AjvCompiler from '@fastify/ajv-compiler';
import cors from '@fastify/cors';
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { Broker } from '../broker/broker.ts';
import type { Config } from '../config.ts';
import type { Database } from '../db/database.ts';
import { uuidv7 } from '../domain/ids.ts';
import type { Logger } from '../observability/logger.ts';
import { httpRequestDuration } from '../observability/metrics.ts';
import { authPlugin } from './auth.ts';
import { errorHandler, problem, sendProblem } from './errors.ts';
import { adminRoutes } from './routes/admin.routes.ts';
import { apiKeysRoutes } from './routes/api-keys.routes.ts';
import { authRoutes } from './routes/auth.routes.ts';
import { eventsRoutes } from './routes/events.routes.ts';
import { projectsRoutes } from './routes/projects.routes.ts';
import { systemRoutes } from './routes/system.routes.ts';
import { contactsRoutes } from './routes/contacts.routes.ts';
import { sessionsRoutes } from './routes/sessions.routes.ts';
import { messagesRoutes } from './routes/messages.routes.ts';
import { channelsRoutes } from './routes/channels.routes.ts';
import { ownDirectory, webhooksIngressRoutes } from './routes/webhooks-ingress.routes.ts';
import { webhookSubscriptionsRoutes } from './routes/webhook-subscriptions.routes.ts';
import { webhookDeliveriesRoutes } from './routes/webhook-deliveries.routes.ts';
import type { ChannelDirectory } from '../inbound/channel-directory.ts';
import { sessionActionsRoutes } from './routes/session-actions.routes.ts';
import { outboundMessagesRoutes } from './routes/outbound-messages.routes.ts';
import { messageMediaRoutes } from './routes/message-media.routes.ts';
import { pipelinesRoutes } from './routes/pipelines.routes.ts';
import { channelActionsRoutes } from './routes/channel-actions.routes.ts';

export const BODY_LIMIT = 1024 * 1024;

export type AppDeps = {
  config: Config;
  db: Database;
  broker: Broker;
  logger: Logger;
  /** Refreshes gauges that are read from storage (queue depth, pending outbox…) before a scrape. */
  refreshMetrics?: () => Promise<void>;
  /** SECRET_KEY as resolved at start-up (embedded mode generates one); seals channel credentials. */
  secretKey?: string;
  /** The process-wide channel cache shared by the ingress and the inbound processor. */
  channelDirectory?: ChannelDirectory;
};

export type RoutePlugin = (app: FastifyInstance, deps: AppDeps) => Promise<void>;

/**
 * Route files mounted under /api/v1, in order. authPlugin comes first: it authenticates every
 * later route and refuses to register one that declares neither a permission nor `public`.
 */
const apiRoutes: RoutePlugin[] = [authPlugin, authRoutes, projectsRoutes, apiKeysRoutes, eventsRoutes, adminRoutes, contactsRoutes, sessionsRoutes, messagesRoutes, channelsRoutes, webhooksIngressRoutes, webhookSubscriptionsRoutes, webhookDeliveriesRoutes, sessionActionsRoutes, outboundMessagesRoutes, messageMediaRoutes, pipelinesRoutes, channelActionsRoutes];

/**
 * A URL Fastify cannot route (bad percent-encoding, `/contacts/%E0%A4%A`) is answered before any
 * route or hook runs; without this it would get Fastify's own error shape, not problem+json.
 */
function malformedUrl(err: FastifyError, req: FastifyRequest, reply: FastifyReply): void {
  void sendProblem(reply.header('x-request-id', req.id), problem('validation', `the URL cannot be read: ${err.message}`));
}

/**
 * The same for the API, with the CORS header the CORS plugin would have added (its hooks do not
 * run either): without it a browser reports a CORS failure instead of the 400.
 */
function malformedUrlWithCors(corsOrigins: readonly string[]) {
  if (corsOrigins.length === 0) return malformedUrl;
  const any = corsOrigins.includes('*');
  return (err: FastifyError, req: FastifyRequest, reply: FastifyReply): void => {
    const origin = req.headers.origin;
    reply.header('vary', 'Origin');
    if (typeof origin === 'string' && (any || corsOrigins.includes(origin))) reply.header('access-control-allow-origin', origin);
    malformedUrl(err, req, reply);
  };
}

/**
 * The worker role's HTTP surface: `/health/live`, `/health/ready` and `/metrics` only, so that
 * worker processes can be probed and scraped like API ones. No API, no ingress, no docs.
 */
export async function buildOpsApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    frameworkErrors: malformedUrl,
    loggerInstance: deps.logger as unknown as FastifyBaseLogger,
    logController: new LogController({ requestIdLogLabel: 'request_id', disableRequestLogging: deps.config.logLevel !== 'debug' && deps.config.logLevel !== 'trace' }),
    return503OnClosing: true,
  });
  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => sendProblem(reply, problem('not_found', `no route for ${req.method} ${req.url.split('?')[0]} on a worker process (health and metrics only)`)));
  await app.register(async (sys) => systemRoutes(sys, deps));
  return app;
}

const validatorPool = AjvCompiler();

/**
 * Validators that coerce what arrives as text — a query string, path parameters, headers: `?limit=5`
 * is the number 5, one `?tag=` a list of one — but take a JSON body as sent: `{"name": false}` is a
 * 400, not the name "false", and `"tags": null` is not a list.
 */
const bodiesAsSent: typeof validatorPool = (externalSchemas, options) => {
  const coercing = validatorPool(externalSchemas, options);
  const given = (options ?? {}) as { customOptions?: Record<string, unknown> };
  const exact = validatorPool(externalSchemas, { ...given, customOptions: { ...given.customOptions, coerceTypes: false } } as typeof options);
  return (route) => (route.httpPart === 'body' ? exact : coercing)(route);
};

export async function buildApp(deps: AppDeps): Promise<FastifyInstance> {
  const app = Fastify({
    loggerInstance: deps.logger as unknown as FastifyBaseLogger,
    bodyLimit: BODY_LIMIT,
    genReqId: (req) => {
      const given = req.headers['x-request-id'];
      return typeof given === 'string' && /^[\w.:-]{1,128}$/.test(given) ? given : uuidv7();
    },
    // Per-request log lines only at debug: at thousands of webhooks a second they would cost more
    // than the ingress itself. Every line a handler logs still carries the request id.
    logController: new LogController({
      requestIdLogLabel: 'request_id',
      disableRequestLogging: deps.config.logLevel !== 'debug' && deps.config.logLevel !== 'trace',
    }),
    ajv: { customOptions: { removeAdditional: false, coerceTypes: 'array', useDefaults: true, allErrors: true } },
    schemaController: { compilersFactory: { buildValidator: bodiesAsSent } },
    return503OnClosing: true,
    frameworkErrors: malformedUrlWithCors(deps.config.corsOrigins),
    // The client's address (req.ip, the per-address login limit) through the proxies we trust.
    trustProxy: typeof deps.config.trustProxy === 'boolean' ? deps.config.trustProxy : [...deps.config.trustProxy],
  });

  app.setErrorHandler(errorHandler);
  app.setNotFoundHandler((req, reply) => sendProblem(reply, problem('not_found', `no route for ${req.method} ${req.url.split('?')[0]}`)));
  // Many HTTP clients (workflow tools, SDKs) put `Content-Type: application/json` on every request,
  // a DELETE or a bodiless POST included: an empty body is no body, not a 400. A route that needs a
  // body still says so (its schema: "body must be object"). Anything else is parsed as Fastify does,
  // `__proto__` and `constructor.prototype` keys refused.
  const json = app.getDefaultJsonParser('error', 'error');
  app.removeContentTypeParser('application/json');
  app.addContentTypeParser('application/json', { parseAs: 'string' }, (req, body, done) => (body === '' ? done(null, undefined) : json(req, body as string, done)));
  // Callback hooks, not async ones: they run on every request (every webhook), and an async hook
  // costs a promise and a microtask turn each time.
  app.addHook('onSend', (req, reply, payload, done) => {
    reply.header('x-request-id', req.id);
    done(null, payload);
  });
  app.addHook('onResponse', (req, reply, done) => {
    const route = req.routeOptions.url ?? 'unmatched';
    httpRequestDuration.observe({ method: req.method, route, status: String(reply.statusCode) }, reply.elapsedTime / 1000);
    done();
  });

  // CORS off (no CORS_ORIGINS) means no plugin at all: it would still run a hook on every request
  // only to find it has nothing to add.
  if (deps.config.corsOrigins.length > 0) {
    await app.register(cors, { origin: deps.config.corsOrigins.includes('*') ? true : [...deps.config.corsOrigins] });
  }

  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: { title: 'Ventros CRM API', version: '1.0.0', description: 'WhatsApp-first CRM: contacts, sessions, messages, events and signed webhooks.' },
      servers: [{ url: deps.config.publicUrl }],
      components: {
        securitySchemes: {
          bearer: { type: 'http', scheme: 'bearer', description: 'API key (vtr_…) or login token' },
          apiKey: { type: 'apiKey', in: 'header', name: 'X-API-Key' },
        },
      },
      security: [{ bearer: [] }, { apiKey: [] }],
    },
  });
  await app.register(swaggerUi, { routePrefix: '/docs' });
  app.get('/openapi.json', { schema: { hide: true } }, async () => app.swagger());

  await app.register(async (sys) => systemRoutes(sys, deps));
  // One channel cache for the ingress and the channel routes, which drop what they change from it.
  const routeDeps: AppDeps = deps.channelDirectory ? deps : { ...deps, channelDirectory: await ownDirectory(app, deps) };
  await app.register(
    async (api) => {
      for (const routes of apiRoutes) await routes(api, routeDeps);
    },
    { prefix: '/api/v1' },
  );
  return app;
}

/** Closes the server; after `graceMs`, the connections of requests still open too. */
export async function closeHttp(app: FastifyInstance, graceMs: number, logger: Logger): Promise<void> {
  const closed = app.close().then(
    () => true,
    (err: unknown) => {
      logger.error({ err }, 'closing http failed');
      return true;
    },
  );
  let timer: NodeJS.Timeout | undefined;
  const late = new Promise<false>((resolve) => (timer = setTimeout(() => resolve(false), graceMs)));
  // Node closes the connections idle when the close begins, not those that become idle after: a
  // request answered meanwhile leaves its kept-alive connection open (Fastify keeps them 72 s), and
  // the close would wait out the whole grace for it.
  const sweep = setInterval(() => app.server.closeIdleConnections(), 50);
  const inTime = await Promise.race([closed, late]);
  clearTimeout(timer);
  clearInterval(sweep);
  if (inTime) return;
  logger.warn({ grace_ms: graceMs }, 'requests still open at shutdown; closing their connections');
  app.server.closeAllConnections();
  await closed;
}

