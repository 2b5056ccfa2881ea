// Health, readiness and metrics — outside /api/v1 and without auth.
import type { FastifyInstance } from 'fastify';
import { checkReadiness } from '../../observability/health.ts';
import { registry } from '../../observability/metrics.ts';
import type { AppDeps } from '../app.ts';

export async function systemRoutes(app: FastifyInstance, deps: AppDeps) {
  app.get('/health/live', { schema: { hide: true } }, async () => ({ status: 'ok' }));

  app.get('/health/ready', { schema: { hide: true } }, async (_req, reply) => {
    const r = await checkReadiness(deps.db, deps.broker);
    const failing = Object.entries(r.components).filter(([, c]) => c.status !== 'ok').map(([k]) => k);
    return reply.code(r.status === 'ok' ? 200 : 503).send({ ...r, ...(failing.length ? { failing } : {}) });
  });

  app.get('/metrics', { schema: { hide: true } }, async (_req, reply) => {
    if (deps.refreshMetrics) await deps.refreshMetrics().catch(() => {});
    return reply.type(registry.contentType).send(await registry.metrics());
  });
}
