// DATABASE_POOL_MAX bounds the connections a process pools: with many API and worker processes on
// one server, their pools together must fit under its max_connections. PostgreSQL only: the
// embedded database has one connection, whatever the setting (its parsing is in config.test.ts).
// A pool too small for its load makes requests wait for a connection: past the pool's wait, a 503.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import type { Database } from '../../src/db/database.ts';
import { buildApp } from '../../src/http/app.ts';
import { openDatabase } from '../../src/main.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { registry } from '../../src/observability/metrics.ts';
import { poolGaugeReader } from '../../src/observability/queue-gauges.ts';
import { call, register } from '../http/harness.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, onServices } from '../support/env.ts';
import { poolWaitingOnLock } from '../support/held.ts';

/** How many server connections serve `n` queries sent at once, each holding its connection a while. */
async function backendsFor(db: Database, n: number): Promise<number> {
  const rows = await Promise.all(
    Array.from({ length: n }, () => db.query<{ pid: number }>('SELECT pg_backend_pid() AS pid, pg_sleep(0.2)').then((r) => r.rows[0].pid)),
  );
  return new Set(rows).size;
}

describe.skipIf(!onServices)('DATABASE_POOL_MAX', () => {
  const open = async (env: Record<string, string>) => {
    const { url } = await makeTestDb();
    const db = await openDatabase(loadConfig({ DATABASE_URL: url!, SECRET_KEY: 'k'.repeat(32), ...env }));
    onCleanup(() => db.close());
    return Object.assign(db, { url: url! });
  };

  it('holds a process to that many pooled connections: six queries at once share two', async () => {
    expect(await backendsFor(await open({ DATABASE_POOL_MAX: '2' }), 6)).toBe(2);
  });

  it('is 20 when unset: six queries at once get a connection each', async () => {
    const db = await open({});
    expect(db.poolStats?.().max).toBe(20);
    expect(await backendsFor(db, 6)).toBe(6);
  });

  it('answers 503 with Retry-After, not 500, when no pooled connection comes within the wait; 200 once one does', async () => {
    const db = await open({ DATABASE_POOL_MAX: '2' });
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    const app = await buildApp({ config: loadConfig({}), db, broker, logger: silentLogger, secretKey: 'k'.repeat(32) } as Parameters<typeof buildApp>[0]);
    onCleanup(() => app.close());
    const reg = await register(app);
    expect(reg.status, reg.body).toBe(201);
    const key: string = reg.json.api_key.key;
    // Both pooled connections wait on a lock another client holds.
    const { held, release } = await poolWaitingOnLock(db, db.url, 2);
    // What a scrape shows meanwhile: the pool full, a caller waiting.
    const waiting = db.query('SELECT 1');
    waiting.catch(() => undefined);
    poolGaugeReader(db)();
    const text = await registry.metrics();
    for (const [series, value] of [['db_pool_connections{state="busy"}', 2], ['db_pool_connections{state="idle"}', 0], ['db_pool_max_connections', 2], ['db_pool_waiting', 1]] as const) {
      expect(text.split('\n'), series).toContain(`${series} ${value}`);
    }
    const r = await call(app, key, 'GET', '/pipelines');
    expect(r.status, r.body).toBe(503);
    expect(r.headers['retry-after']).toBe('5');
    expect(r.json).toMatchObject({ code: 'unavailable', detail: expect.stringMatching(/^the database cannot be reached/) });
    await release();
    await Promise.all(held);
    await waiting.catch(() => undefined); // it gave up after the pool's wait, as the request did
    expect((await call(app, key, 'GET', '/pipelines')).status).toBe(200);
  }, 60_000);
});
