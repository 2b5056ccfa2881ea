// The channel cache when LISTEN cannot be made at first: the directory still starts and keeps what
// it loads for a second only; once a later try listens, it keeps entries for its full lifetime and
// a change announced by NOTIFY drops one at once. Only Date is faked (the cache's clock, which
// jumps when the test says, and otherwise stands still or moves with real time); timers, the
// database and the LISTEN retries run for real.
import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeChannelDirectory } from '../../src/inbound/channel-directory.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { makeChannelsService } from '../../src/services/channels.service.ts';
import { makeTestDb, onCleanup, waitFor } from '../support/env.ts';
import { failingListen } from '../support/failing-listen.ts';
import { wrapDatabase } from '../support/wrapped-db.ts';
import { markUnavailable } from '../../src/db/unavailable.ts';

const SECRET_KEY = 'k'.repeat(64);

/** Renames a channel behind the application's back: no NOTIFY, only a cache lifetime can show it. */
const renameSilently = (db: Database, id: string, name: string) => db.query('UPDATE channels SET name = $2 WHERE id = $1::uuid', [id, name]);

afterEach(() => void vi.useRealTimers());

describe('channel directory', () => {
  it('starts while LISTEN fails and caches for a second; once listening, for its lifetime, dropped by a change', async () => {
    const { db } = await makeTestDb();
    const channels = makeChannelsService({ db, secretKey: SECRET_KEY, publicUrl: 'http://127.0.0.1', defaultSessionTimeoutMinutes: 30 });
    const projectId = uuidv7();
    const ch = await channels.create(projectId, { name: 'first', type: 'waha', config: { base_url: 'http://127.0.0.1:1', api_key: 'k', session: 's' } });
    const flaky = failingListen(db, Infinity);
    const directory = makeChannelDirectory({ db: flaky.db, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger, ttlMs: 60_000 });
    await directory.start(); // its LISTEN fails, and keeps failing until allowed: it starts anyway
    onCleanup(() => directory.stop());
    const nameOf = async () => (await directory.get(ch.id))?.name;

    // Standing still while an entry kept for a second is read twice: on a slow machine the rename
    // between the reads could otherwise outlast that second.
    vi.useFakeTimers({ toFake: ['Date'] });
    const later = (ms: number) => vi.setSystemTime(Date.now() + ms);
    expect(await nameOf()).toBe('first');
    await renameSilently(db, ch.id, 'second');
    expect(await nameOf()).toBe('first'); // cached
    later(1_500);
    expect(await nameOf()).toBe('second'); // a second, not a minute

    // From here it runs on with real time as well (waitFor's deadline reads Date), and still
    // jumps when told.
    vi.setTimerTickMode('interval');
    flaky.allow();
    await waitFor(() => flaky.listening() === 1, 'a later LISTEN', 30_000);
    directory.invalidate(ch.id);
    expect(await nameOf()).toBe('second'); // loaded while listening
    await renameSilently(db, ch.id, 'third');
    later(30_000);
    expect(await nameOf()).toBe('second'); // kept for its lifetime now
    await channels.update(projectId, ch.id, { name: 'fourth' }); // announced
    await waitFor(async () => (await nameOf()) === 'fourth', 'the announced change to drop the entry', 10_000);
  });

  it('serves a channel past its lifetime while the database cannot answer, up to maxStaleMs after its last read', async () => {
    const { db } = await makeTestDb();
    const channels = makeChannelsService({ db, secretKey: SECRET_KEY, publicUrl: 'http://127.0.0.1', defaultSessionTimeoutMinutes: 30 });
    const projectId = uuidv7();
    const ch = await channels.create(projectId, { name: 'kept', type: 'waha', config: { base_url: 'http://127.0.0.1:1', api_key: 'k', session: 's' } });
    const unknown = uuidv7();
    let down = false;
    let queries = 0;
    const flaky = wrapDatabase(db, {
      query: (sql, params) => {
        queries++;
        return down ? Promise.reject(markUnavailable(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }))) : db.query(sql, params);
      },
    });
    const directory = makeChannelDirectory({ db: flaky, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger, ttlMs: 60_000, missTtlMs: 5_000, maxStaleMs: 10 * 60_000 });
    await directory.start();
    onCleanup(() => directory.stop());
    vi.useFakeTimers({ toFake: ['Date'] });
    const later = (ms: number) => vi.setSystemTime(Date.now() + ms);
    expect((await directory.get(ch.id))?.name).toBe('kept');
    expect(await directory.get(unknown)).toBeUndefined();

    down = true;
    later(2 * 60_000); // past both lifetimes
    expect((await directory.get(ch.id))?.name).toBe('kept'); // as last read
    expect(await directory.get(unknown)).toBeUndefined(); // still unknown, not an error
    const asked = queries;
    expect((await directory.get(ch.id))?.name).toBe('kept');
    expect(queries).toBe(asked); // not asked again within the second
    later(1_500);
    expect((await directory.get(ch.id))?.name).toBe('kept');
    expect(queries).toBe(asked + 1); // asked again once the second is over

    later(9 * 60_000); // more than maxStaleMs since the last successful read
    await expect(directory.get(ch.id)).rejects.toThrow(/ECONNREFUSED/);

    down = false;
    expect((await directory.get(ch.id))?.name).toBe('kept'); // read again
  });

  it('keeps unknown ids apart: a flood of made-up ids does not evict a known channel', async () => {
    const { db } = await makeTestDb();
    const channels = makeChannelsService({ db, secretKey: SECRET_KEY, publicUrl: 'http://127.0.0.1', defaultSessionTimeoutMinutes: 30 });
    const ch = await channels.create(uuidv7(), { name: 'hot', type: 'waha', config: { base_url: 'http://127.0.0.1:1', api_key: 'k', session: 's' } });
    const directory = makeChannelDirectory({ db, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger, maxEntries: 20 });
    await directory.start();
    onCleanup(() => directory.stop());
    expect((await directory.get(ch.id))?.name).toBe('hot');
    for (let i = 0; i < 50; i++) expect(await directory.get(uuidv7())).toBeUndefined();
    await renameSilently(db, ch.id, 'renamed'); // no NOTIFY: only a reload would show it
    expect((await directory.get(ch.id))?.name).toBe('hot'); // still cached
  });

  it('drops everything cached when its listening connection is back after a drop: changes announced meanwhile were missed', async () => {
    const { db } = await makeTestDb();
    const channels = makeChannelsService({ db, secretKey: SECRET_KEY, publicUrl: 'http://127.0.0.1', defaultSessionTimeoutMinutes: 30 });
    const ch = await channels.create(uuidv7(), { name: 'before', type: 'waha', config: { base_url: 'http://127.0.0.1:1', api_key: 'k', session: 's' } });
    let resume: (() => void) | undefined;
    const tracked = wrapDatabase(db, { listen: (channel, cb, onResume) => ((resume = onResume), db.listen(channel, cb, onResume)) });
    const directory = makeChannelDirectory({ db: tracked, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger, ttlMs: 60_000 });
    await directory.start();
    onCleanup(() => directory.stop());
    expect((await directory.get(ch.id))?.name).toBe('before');
    await renameSilently(db, ch.id, 'during the drop'); // its announcement lost with the connection
    expect((await directory.get(ch.id))?.name).toBe('before');
    expect(resume).toBeTypeOf('function');
    resume!();
    expect((await directory.get(ch.id))?.name).toBe('during the drop');
  });

  it('serves the entry as read when a reading hangs (a database that does not answer), and only for an outage, not for any failure', async () => {
    const { db } = await makeTestDb();
    const channels = makeChannelsService({ db, secretKey: SECRET_KEY, publicUrl: 'http://127.0.0.1', defaultSessionTimeoutMinutes: 30 });
    const ch = await channels.create(uuidv7(), { name: 'kept', type: 'waha', config: { base_url: 'http://127.0.0.1:1', api_key: 'k', session: 's' } });
    let mode: 'up' | 'hang' | 'broken' = 'up';
    const hanging: Array<() => void> = [];
    const flaky = wrapDatabase(db, {
      query: (sql, params) => {
        if (mode === 'hang') return new Promise((_, reject) => void hanging.push(() => reject(markUnavailable(new Error('Connection terminated unexpectedly')))));
        if (mode === 'broken') return Promise.reject(new Error('column "secrets" does not exist')); // not an outage
        return db.query(sql, params);
      },
    });
    const directory = makeChannelDirectory({ db: flaky, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger, ttlMs: 60_000 });
    await directory.start();
    onCleanup(() => directory.stop());
    onCleanup(async () => hanging.forEach((fail) => fail()));
    vi.useFakeTimers({ toFake: ['Date'] });
    const later = (ms: number) => vi.setSystemTime(Date.now() + ms);
    expect((await directory.get(ch.id))?.name).toBe('kept');

    mode = 'hang';
    later(2 * 60_000);
    expect((await directory.get(ch.id))?.name).toBe('kept'); // after at most a short wait, not the reading's
    expect(hanging).toHaveLength(1);
    expect((await directory.get(ch.id))?.name).toBe('kept'); // the reading still hangs: not waited for
    expect(hanging).toHaveLength(1); // and not asked again while it does
    hanging.splice(0).forEach((fail) => fail()); // the outage ends that reading with an error
    expect((await directory.get(ch.id))?.name).toBe('kept'); // its failure handled: as read, for a second more

    mode = 'broken';
    later(2 * 60_000);
    await expect(directory.get(ch.id)).rejects.toThrow(/does not exist/); // a fault of ours is not hidden
  });
});
