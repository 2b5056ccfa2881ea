// Readiness follows the broker: stopping the real RabbitMQ application turns /health/ready into a
// 503 that names the broker, and starting it again brings 200 back without restarting Ventros.
import { afterAll, describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { startVentros, type Running } from '../../src/main.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { makeTestDb, onServices, waitFor } from '../support/env.ts';
import { makeTestBroker } from '../support/brokers.ts';
import { startRabbit, stopRabbit } from '../support/rabbit-control.ts';

describe.runIf(onServices)('readiness while RabbitMQ is stopped', () => {
  let running: Running | undefined;
  afterAll(async () => {
    await startRabbit().catch(() => {});
    await running?.stop();
  });

  it('answers 503 naming the broker, then 200 again once it is back', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker('rabbitmq', db);
    running = await startVentros({ config: loadConfig({ SECRET_KEY: 'k'.repeat(32) }), role: 'api', db, broker, listen: false, logger: silentLogger });
    const ready = () => running!.app!.inject({ method: 'GET', url: '/health/ready' });

    // Each probe has a 2 s deadline, which a first connection on a loaded machine can miss.
    await waitFor(async () => (await ready()).statusCode === 200, 'readiness to answer 200 while RabbitMQ runs', 30_000, 200);
    await stopRabbit();
    const down = await waitFor(async () => {
      const r = await ready();
      return r.statusCode === 503 ? r : undefined;
    }, 'readiness to report the broker down', 30_000, 200);
    expect(down.json()).toMatchObject({ status: 'unavailable', failing: ['broker'], components: { database: { status: 'ok' }, broker: { status: 'down' } } });

    await startRabbit();
    await waitFor(async () => (await ready()).statusCode === 200, 'readiness to recover without a restart', 60_000, 200);
  });
});
