// Every process can be probed and scraped: a worker serves health and metrics (and nothing else),
// and the queue gauges are read from the broker at scrape time, whatever the role.
import { describe, expect, it } from 'vitest';
import { insertDeadLetter } from '../../src/broker/dead-letters.sql.ts';
import { Queues } from '../../src/broker/topology.ts';
import { loadConfig } from '../../src/config.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { startVentros } from '../../src/main.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { makeQueueGaugesRefresher } from '../../src/observability/queue-gauges.ts';
import { registry } from '../../src/observability/metrics.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, onServices, waitFor } from '../support/env.ts';

const config = loadConfig({ SECRET_KEY: 'k'.repeat(32), HOST: '127.0.0.1', PORT: '0' });

/** The value of one series in a Prometheus text exposition, if it is there. */
function sample(text: string, series: string): number | undefined {
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

async function gauge(series: string): Promise<number | undefined> {
  return sample(await registry.metrics(), series);
}

describe('metrics and health on every role', () => {
  it('a worker process answers /health/live, /health/ready and /metrics on its port, and nothing of the API', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    const running = await startVentros({ config, role: 'worker', db, broker, logger: silentLogger });
    onCleanup(() => running.stop());
    expect(running.url).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);

    expect((await fetch(`${running.url}/health/live`)).status).toBe(200);
    const ready = await fetch(`${running.url}/health/ready`);
    expect(ready.status).toBe(200);
    expect(await ready.json()).toMatchObject({ status: 'ok', components: { database: { status: 'ok' }, broker: { status: 'ok' } } });

    const metrics = await fetch(`${running.url}/metrics`);
    expect(metrics.status).toBe(200);
    const text = await metrics.text();
    // What only a worker updates, and the queue gauges read at this scrape.
    for (const name of ['outbox_pending', 'consumer_messages_total', 'webhook_deliveries_total', 'sessions_active']) expect(text).toContain(`# TYPE ${name}`);
    expect(sample(text, `queue_depth{queue="${Queues.inboundRaw}"}`)).toBe(0);
    expect(sample(text, `dead_letters{queue="${Queues.inboundRaw}"}`)).toBe(0);
    // This process's connection pool, read at the scrape (the test database's pool holds 10).
    if (onServices) expect(sample(text, 'db_pool_max_connections')).toBe(10);

    for (const url of ['/api/v1/contacts', '/docs', '/openapi.json']) {
      const res = await fetch(`${running.url}${url}`);
      expect(res.status, url).toBe(404);
      expect(res.headers.get('content-type')).toMatch(/application\/problem\+json/);
    }
  });

  it('with METRICS_TOKEN, /metrics answers only the token, on the api and the worker alike; health stays open', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    const token = 'scrape-0123456789abcdef';
    const guarded = loadConfig({ SECRET_KEY: 'k'.repeat(32), HOST: '127.0.0.1', PORT: '0', METRICS_TOKEN: token });
    for (const role of ['worker', 'api'] as const) {
      const running = await startVentros({ config: guarded, role, db, broker, logger: silentLogger });
      onCleanup(() => running.stop());
      const scrape = (authorization?: string) => fetch(`${running.url}/metrics`, authorization ? { headers: { authorization } } : {});
      for (const wrong of [undefined, `Bearer ${token}x`, `Bearer ${token.slice(0, -1)}`, token, `Basic ${token}`]) {
        const refused = await scrape(wrong);
        expect(refused.status, `${role}: ${wrong}`).toBe(401);
        expect(refused.headers.get('content-type')).toMatch(/application\/problem\+json/);
        expect(refused.headers.get('www-authenticate')).toMatch(/^Bearer/);
        expect(await refused.text()).not.toContain('# TYPE');
      }
      const ok = await scrape(`Bearer ${token}`);
      expect(ok.status, role).toBe(200);
      expect(await ok.text()).toContain('# TYPE outbox_pending');
      expect((await fetch(`${running.url}/health/live`)).status).toBe(200);
      expect((await fetch(`${running.url}/health/ready`)).status).toBe(200);
    }
  });

  it('an api process reports the depth of the queues and their dead letters as the broker has them', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    // The api role runs no consumer: what is sent to the raw queue stays there.
    const running = await startVentros({ config, role: 'api', db, broker, listen: false, logger: silentLogger });
    onCleanup(() => running.stop());
    await broker.send(Queues.inboundRaw, [1, 2, 3].map((n) => ({ messageId: uuidv7(), body: Buffer.from(`{"n":${n}}`), headers: {} })));
    await insertDeadLetter(db, { queue: Queues.webhooksOutbound, messageId: uuidv7(), routingKey: Queues.webhooksOutbound, headers: {}, body: Buffer.from('{}'), error: 'boom', attempts: 3 });

    const scrape = async () => (await running.app.inject({ method: 'GET', url: '/metrics' })).body;
    await waitFor(async () => sample(await scrape(), `queue_depth{queue="${Queues.inboundRaw}"}`) === 3 || undefined, 'queue_depth of the raw queue to be 3');
    const text = await scrape();
    expect(sample(text, `dead_letters{queue="${Queues.webhooksOutbound}"}`)).toBe(1);
    expect(sample(text, `dead_letters{queue="${Queues.inboundRaw}"}`)).toBe(0);
    expect(sample(text, `queue_depth{queue="${Queues.webhooksOutbound}"}`)).toBe(0);
  });

  it('scrapes at the same time share one reading, and a reading younger than its age limit is reused', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    let readings = 0;
    const counted = Object.assign(Object.create(broker), {
      stats: (queues?: readonly string[]) => {
        readings++;
        return broker.stats(queues);
      },
    }) as typeof broker;
    const queue = Queues.messagesOutbound;
    await broker.declareQueues([{ name: queue }]);

    const cached = makeQueueGaugesRefresher(counted, [queue], 60_000);
    await Promise.all([cached(), cached(), cached()]);
    expect(readings).toBe(1);
    expect(await gauge(`queue_depth{queue="${queue}"}`)).toBe(0);
    await broker.send(queue, [{ messageId: uuidv7(), body: Buffer.from('{}'), headers: {} }]);
    await cached();
    expect(readings).toBe(1); // within the minute: the last reading stands
    expect(await gauge(`queue_depth{queue="${queue}"}`)).toBe(0);

    const fresh = makeQueueGaugesRefresher(counted, [queue], 0);
    await waitFor(async () => {
      await fresh();
      return (await gauge(`queue_depth{queue="${queue}"}`)) === 1 || undefined;
    }, 'the new message to be counted');
    expect(readings).toBeGreaterThan(1);
  });

  it('a failed reading keeps the last values and is tried again at the next scrape', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    let fail = false;
    const flaky = Object.assign(Object.create(broker), {
      stats: (queues?: readonly string[]) => (fail ? Promise.reject(new Error('broker away')) : broker.stats(queues)),
    }) as typeof broker;
    const queue = Queues.webhooksDue;
    await broker.declareQueues([{ name: queue }]);
    await broker.send(queue, [{ messageId: uuidv7(), body: Buffer.from('{}'), headers: {} }]);
    const refresh = makeQueueGaugesRefresher(flaky, [queue], 0);
    await waitFor(async () => {
      await refresh();
      return (await gauge(`queue_depth{queue="${queue}"}`)) === 1 || undefined;
    }, 'the message to be counted');
    fail = true;
    await expect(refresh()).rejects.toThrow('broker away');
    expect(await gauge(`queue_depth{queue="${queue}"}`)).toBe(1);
    fail = false;
    await refresh(); // not stuck on the failed reading
  });
});
