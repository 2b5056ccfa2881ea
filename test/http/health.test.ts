import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { withDeadline } from '../../src/deadline.ts';
import { buildApp } from '../../src/http/app.ts';
import { METRICS_REFRESH_DEADLINE_MS } from '../../src/http/routes/system.routes.ts';
import { sharedReadiness } from '../../src/observability/health.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { makeTestDb, waitFor } from '../support/env.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';

describe('health and metrics', () => {
  it('is live and ready, serves Prometheus metrics, and names the database when it goes away', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    const app = await buildApp({ config: loadConfig({}), db, broker, logger: silentLogger, secretKey: 'k'.repeat(32) } as Parameters<typeof buildApp>[0]);
    try {
      expect((await app.inject({ method: 'GET', url: '/health/live' })).statusCode).toBe(200);
      // Each probe has a 2 s deadline, which a first connection on a loaded machine can miss: ask
      // until it answers 200. The 503 at the end shows it does not answer 200 regardless.
      const ready = await waitFor(async () => {
        const r = await app.inject({ method: 'GET', url: '/health/ready' });
        return r.statusCode === 200 ? r : undefined;
      }, 'readiness to answer 200');
      expect(ready.json()).toMatchObject({ status: 'ok', components: { database: { status: 'ok' }, broker: { status: 'ok' } } });

      await app.inject({ method: 'GET', url: '/api/v1/nowhere' });
      const metrics = await app.inject({ method: 'GET', url: '/metrics' });
      expect(metrics.statusCode).toBe(200);
      expect(metrics.headers['content-type']).toMatch(/text\/plain/);
      for (const name of ['http_request_duration_seconds', 'process_cpu_seconds_total', 'outbox_pending', 'inbound_events_total', 'webhook_deliveries_total']) {
        expect(metrics.body).toContain(name);
      }

      const notFound = await app.inject({ method: 'GET', url: '/api/v1/nowhere' });
      expect(notFound.statusCode).toBe(404);
      expect(notFound.headers['content-type']).toMatch(/application\/problem\+json/);
      expect(notFound.json()).toMatchObject({ status: 404, code: 'not_found' });

      await broker.close();
      await db.close();
      // A reading is reused for a second: the next one after that sees the database gone.
      const down = await waitFor(async () => {
        const r = await app.inject({ method: 'GET', url: '/health/ready' });
        return r.statusCode === 503 ? r : undefined;
      }, 'readiness to answer 503');
      expect(down.json().failing).toContain('database');
      // Public: it says the component is down, not the driver's words (hosts, users, paths).
      expect(down.json().components.database).toEqual({ status: 'down', error: expect.stringMatching(/^(unreachable|did not answer within 2000 ms)$/) });
    } finally {
      await app.close();
    }
  });

  it('answers a scrape with the last gauges when reading them does not end (a broker that hangs)', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    let asked = 0;
    const refreshMetrics = () => {
      asked++;
      return new Promise<void>(() => {}); // never answers
    };
    const app = await buildApp({ config: loadConfig({}), db, broker, logger: silentLogger, secretKey: 'k'.repeat(32), refreshMetrics } as Parameters<typeof buildApp>[0]);
    try {
      const metrics = await withDeadline(app.inject({ method: 'GET', url: '/metrics' }), METRICS_REFRESH_DEADLINE_MS + 3_000, 'the scrape waited for the reading');
      expect(metrics.statusCode).toBe(200);
      expect(metrics.body).toContain('queue_depth');
      expect(asked).toBe(1);
    } finally {
      await app.close();
    }
  });

  it('tells a database that hangs as one that did not answer in time, not as unreachable', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    // As the adapters ping: with their own deadline, given by the caller.
    const hanging = new Proxy(db, {
      get: (target, prop) => (prop === 'ping' ? (ms = 2000) => withDeadline(new Promise<void>(() => {}), ms, 'database did not answer') : Reflect.get(target, prop)),
    });
    const ready = await sharedReadiness(hanging, broker, silentLogger)();
    expect(ready.components.database).toEqual({ status: 'down', error: 'did not answer within 2000 ms' });
  });

  it('shares one check among the probes that ask at once, and reuses it for a second', async () => {
    const { db } = await makeTestDb();
    const real = await makeTestBroker(defaultBrokerKind(), db);
    let checks = 0;
    let pings = 0;
    const broker = Object.assign(Object.create(real), { check: () => (checks++, real.check()) }) as typeof real;
    const counted = { ...db, ping: (ms?: number) => (pings++, db.ping(ms)) } as typeof db;
    const app = await buildApp({ config: loadConfig({}), db: counted, broker, logger: silentLogger, secretKey: 'k'.repeat(32) } as Parameters<typeof buildApp>[0]);
    try {
      const answers = await Promise.all(Array.from({ length: 200 }, () => app.inject({ method: 'GET', url: '/health/ready' })));
      expect(new Set(answers.map((r) => r.statusCode)).size).toBe(1);
      expect(checks).toBe(1);
      expect(pings).toBe(1);
    } finally {
      await app.close();
      await real.close();
    }
  });
});
