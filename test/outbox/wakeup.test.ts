// Commits wake the relay only while it sleeps (migration 011): a busy relay costs writers no
// NOTIFY, and a relay that goes to sleep never misses a commit that raced its going to sleep.
import { describe, expect, it } from 'vitest';
import { uuidv7 } from '../../src/domain/ids.ts';
import { OUTBOX_CHANNEL } from '../../src/outbox/relay.ts';
import { appendEvents, registerSleeper, unregisterSleeper } from '../../src/outbox/outbox.sql.ts';
import { makeTestBroker, defaultBrokerKind } from '../support/brokers.ts';
import { makeTestDb, onCleanup, onServices, waitFor } from '../support/env.ts';
import { contactCreated, interceptDb, relayFor, startRecorder, writeEvents } from './helpers.ts';
import { withTransaction } from '../../src/db/transaction.ts';

describe('outbox wake-ups', () => {
  it('notifies on commit only while a relay is registered as sleeping', async () => {
    const { db } = await makeTestDb();
    const got: string[] = [];
    const unlisten = await db.listen(OUTBOX_CHANNEL, (payload) => got.push(payload));
    onCleanup(unlisten);
    // Notifications arrive in commit order: a marker sent after a commit proves whether that
    // commit notified, without waiting for something not to happen.
    const mark = async (name: string) => {
      await db.query('SELECT pg_notify($1, $2)', [OUTBOX_CHANNEL, name]);
      await waitFor(() => got.includes(name), `the ${name} notification`);
    };

    await writeEvents(db, 2);
    await mark('m1');
    expect(got).toEqual(['m1']); // nobody sleeps: no wake-ups

    const relayId = uuidv7();
    await registerSleeper(db, relayId);
    await writeEvents(db, 1);
    await mark('m2');
    expect(got).toEqual(['m1', '', 'm2']);

    await unregisterSleeper(db, relayId);
    await writeEvents(db, 1);
    await mark('m3');
    expect(got).toEqual(['m1', '', 'm2', 'm3']);
  });

  it('a relay sleeping on an hour-long poll still picks up every commit around its naps', async () => {
    const { db: raw } = await makeTestDb();
    let barriers = 0;
    const db = interceptDb(raw, (sql) => {
      if (sql.includes('pg_try_advisory_xact_lock($1, $2)')) barriers++;
    });
    const broker = await makeTestBroker(defaultBrokerKind(), raw);
    const rec = await startRecorder(raw, broker);
    // Goes to sleep 20 ms after its last batch; only a commit's NOTIFY can wake it.
    relayFor({ db, broker, pollMs: 3_600_000, lingerMs: 20, activePollMs: 5 });
    const ids: string[] = [];
    for (let i = 0; i < 60; i++) {
      ids.push(...(await writeEvents(raw, 1 + (i % 3))));
      // Gaps around the linger time, so commits land before, during and after it goes to sleep.
      await new Promise((r) => setTimeout(r, (i * 7) % 45));
    }
    await waitFor(() => new Set(rec.applied).size === ids.length, `all ${ids.length} events applied`, 30_000);
    expect(new Set(rec.applied)).toEqual(new Set(ids));
    expect(barriers).toBeGreaterThan(3); // it really went to sleep, again and again
  }, 60_000);

  // PGlite is one connection: a writer cannot hold a transaction open while the relay works.
  it.runIf(onServices)('waits, before sleeping, for a writer that was in progress when it registered', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(defaultBrokerKind(), db);
    const rec = await startRecorder(db, broker);
    const registered = async () => (await db.query('SELECT 1 FROM outbox_relay_sleepers')).rows.length > 0;
    // This writer appends (its trigger finds nobody asleep: no NOTIFY will come) and stays open
    // until the relay has registered; only then does it commit.
    let release!: () => void;
    const open = new Promise<void>((r) => (release = r));
    const event = contactCreated(uuidv7());
    const writer = withTransaction(db, async (tx) => {
      await appendEvents(tx, [event]);
      await open;
    });
    relayFor({ db, broker, pollMs: 3_600_000, lingerMs: 20, activePollMs: 5 });
    await waitFor(registered, 'the relay registered as sleeping');
    release();
    await writer;
    // Without the barrier the relay would be asleep for a minute by now, and this commit sent no
    // wake-up: only the claim made after the barrier passes can find it.
    await waitFor(() => rec.applied.includes(event.id), 'the event published', 10_000);
  }, 30_000);
});
