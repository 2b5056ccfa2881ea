// Health, readiness and metrics — outside /api/v1 and without API auth. /metrics asks for
// METRICS_TOKEN when one is set.
import { createHash, timingSafeEqual } from 'node:crypto';
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../../errors.ts';
import { withDeadline } from '../../deadline.ts';
import { sharedReadiness } from '../../observability/health.ts';
import { registry } from '../../observability/metrics.ts';
import type { AppDeps } from '../app.ts';

/** How long a scrape waits for the gauges read from the broker and the database. */
export const METRICS_REFRESH_DEADLINE_MS = 2000;

export async function systemRoutes(app: FastifyInstance, deps: AppDeps) {
  app.get('/health/live', { schema: { hide: true } }, async () => ({ status: 'ok' }));

  const readiness = sharedReadiness(deps.db, deps.broker, deps.logger);
  app.get('/health/ready', { schema: { hide: true } }, async (_req, reply) => {
    const r = await readiness();
    const failing = Object.entries(r.components).filter(([, c]) => c.status !== 'ok').map(([k]) => k);
    return reply.code(r.status === 'ok' ? 200 : 503).send({ ...r, ...(failing.length ? { failing } : {}) });
  });

  const allowed = metricsGate(deps.config.metricsToken);
  app.get('/metrics', { schema: { hide: true } }, async (req, reply) => {
    if (!allowed(req)) throw new AppError('unauthorized', 'metrics need the token set in METRICS_TOKEN: `Authorization: Bearer <token>`', undefined, { 'www-authenticate': 'Bearer realm="metrics"' });
    // A broker or database that does not answer must not hold the scrape: past the deadline the
    // gauges keep their last values (the reading goes on, and the next scrape may use it).
    if (deps.refreshMetrics) await withDeadline(deps.refreshMetrics(), METRICS_REFRESH_DEADLINE_MS, 'metrics refresh too slow').catch(() => {});
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}

/** Everyone without a token configured; else only a request bearing it (compared in constant time). */
function metricsGate(token: string | undefined): (req: FastifyRequest) => boolean {
  if (token === undefined) return () => true;
  const digest = (v: string) => createHash('sha256').update(v).digest();
  const expected = digest(token);
  return (req) => {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(req.headers.authorization ?? '');
    return m !== null && timingSafeEqual(digest(m[1]), expected);
  };
}
