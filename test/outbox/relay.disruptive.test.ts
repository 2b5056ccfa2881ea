// Stops the real RabbitMQ application while events are being committed. Disruptive: vitest runs
// *.disruptive.test.ts files alone, after every other file, because they share the server.
import { describe, expect, it } from 'vitest';
import { countPending } from '../../src/outbox/outbox.sql.ts';
import { makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onServices, waitFor } from '../support/env.ts';
import { startRabbit, stopRabbit } from '../support/rabbit-control.ts';
import { effectCounts, firstOccurrences, relayFor, startRecorder, writeEvents } from './helpers.ts';

describe.runIf(onServices)('outbox relay while RabbitMQ is stopped and started', () => {
  it('lets the outbox accumulate, then drains it in creation order with each effect exactly once', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker('rabbitmq', db);
    const rec = await startRecorder(db, broker);
    relayFor({ db, broker, pollMs: 200 });

    // A writer that keeps committing events, one or three per transaction, until told to stop.
    const ids: string[] = [];
    let writing = true;
    let writeError: unknown;
    const writer = (async () => {
      for (let i = 0; writing; i++) {
        ids.push(...(await writeEvents(db, i % 4 === 0 ? 3 : 1)));
        await new Promise((r) => setTimeout(r, 5)); // a steady trickle, not a measurement
      }
    })().catch((err) => (writeError = err));

    let stopped = false;
    try {
      await waitFor(() => rec.applied.length >= 50, 'events flowing before the outage', 30_000);
      await stopRabbit();
      stopped = true;
      const atStop = ids.length;
      await waitFor(async () => ids.length >= atStop + 200 && (await countPending(db)) >= 150, 'the outbox to accumulate while RabbitMQ is down', 60_000);
      const appliedDuringOutage = rec.applied.length;
      await startRabbit();
      stopped = false;
      await waitFor(() => rec.applied.length >= appliedDuringOutage + 100, 'events flowing again after the restart', 90_000);
    } finally {
      writing = false;
      if (stopped) await startRabbit(); // never leave the shared server down
    }
    await writer;
    expect(writeError).toBeUndefined();

    await waitFor(async () => rec.applied.length === ids.length && (await countPending(db)) === 0, `all ${ids.length} events applied`, 90_000, 50);
    expect(firstOccurrences(rec.deliveries)).toEqual(ids);
    expect(rec.applied).toEqual(ids);
    expect(await effectCounts(db)).toEqual({ rows: ids.length, distinct: ids.length });
    const retried = await db.query<{ n: number }>('SELECT count(*)::int AS n FROM outbox WHERE publish_attempts > 1');
    expect(retried.rows[0].n).toBeGreaterThan(0); // the relay really met the outage
  }, 300_000);
});
