// The readiness probe's database ping has a connection of its own: a pool whose every connection
// waits on a lock (a migration's, a long transaction's) is the application's trouble, not a
// database that is down — before, every process answered /health/ready 503 at once, and a load
// balancer took them all out. PostgreSQL only: the embedded database has one connection.
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { buildApp } from '../../src/http/app.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, onServices } from '../support/env.ts';
import { poolWaitingOnLock } from '../support/held.ts';

describe.skipIf(!onServices)('the database ping', () => {
  it('answers while every pooled connection waits on a lock, and the held queries then finish', async () => {
    const { url } = await makeTestDb();
    const db = connectPostgres({ url: url!, max: 3 });
    onCleanup(() => db.close());
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    const { held, release } = await poolWaitingOnLock(db, url!, 3);

    // Before, the ping queued behind them: 503, "did not answer within 2000 ms".
    const app = await buildApp({ config: loadConfig({}), db, broker, logger: silentLogger, secretKey: 'k'.repeat(32) } as Parameters<typeof buildApp>[0]);
    onCleanup(() => app.close());
    const ready = await app.inject({ method: 'GET', url: '/health/ready' });
    expect(ready.json()).toMatchObject({ status: 'ok', components: { database: { status: 'ok' } } });
    expect(ready.statusCode).toBe(200);

    await release();
    for (const r of await Promise.all(held)) expect(r.rows[0].n).toBe(0);
  }, 60_000);

  it('tells a closed database, and one that cannot be reached', async () => {
    const { url } = await makeTestDb();
    const db = connectPostgres({ url: url! });
    await db.ping();
    await db.close();
    await expect(db.ping()).rejects.toThrow(/closed/);
    const nowhere = connectPostgres({ url: 'postgres://postgres@127.0.0.1:1/nowhere' });
    onCleanup(() => nowhere.close());
    await expect(nowhere.ping(1000)).rejects.toThrow();
  });
});
