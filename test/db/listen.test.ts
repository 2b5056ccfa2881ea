// LISTEN: a call that fails leaves nothing behind, the PostgreSQL connection comes back after a
// drop, closing mid-connect leaves no connection open, and keepListening retries a first failure
// until it listens (or is stopped).
import { describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { keepListening } from '../../src/db/keep-listening.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { makeLogger, silentLogger } from '../../src/observability/logger.ts';
import { makeTestDb, onCleanup, onServices, uniqueName, waitFor } from '../support/env.ts';
import { failingListen } from '../support/failing-listen.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';
import { wrapDatabase } from '../support/wrapped-db.ts';

/** Notifies until `got` holds the marker: a listener may still be (re)connecting. */
function heardBy(notifier: Database, channel: string, got: string[]) {
  return (marker: string) =>
    waitFor(async () => {
      await notifier.query('SELECT pg_notify($1, $2)', [channel, marker]);
      return got.includes(marker);
    }, `notification ${marker}`, 15_000, 100);
}

describe('keepListening', () => {
  it('tries again after a failed first LISTEN, reports it, and delivers once listening', async () => {
    const { db } = await makeTestDb();
    const channel = uniqueName('keep');
    const flaky = failingListen(db, 2);
    const got: string[] = [];
    const l = keepListening(flaky.db, channel, (p) => got.push(p), {
      logger: silentLogger,
      what: 'test notifications',
      fallback: 'nothing',
      retryMs: { min: 20, max: 40 },
    });
    onCleanup(() => l.stop());
    expect(await l.first).toBe(false);
    expect(l.heard).toBe(false);
    await heardBy(db, channel, got)('after-two-failures');
    expect(flaky.calls()).toBe(3);
    expect(l.heard).toBe(true);
    await l.stop();
    expect(l.heard).toBe(false);
    // Notifications arrive in commit order: once the second channel's is in, the first's would be.
    const other = uniqueName('other');
    const fromOther: string[] = [];
    onCleanup(await db.listen(other, (p) => fromOther.push(p)));
    await db.query('SELECT pg_notify($1, $2)', [channel, 'after-stop']);
    await heardBy(db, other, fromOther)('marker');
    expect(got).not.toContain('after-stop');
  });

  it('catches up once it listens after failing, and when the adapter reconnects; a catch-up that throws is logged', async () => {
    const { db } = await makeTestDb();
    const flaky = failingListen(db, 1);
    let adapterResume: (() => void) | undefined;
    const tracked = wrapDatabase(flaky.db, { listen: (channel, cb, onResume) => ((adapterResume = onResume), flaky.db.listen(channel, cb, onResume)) });
    const lines: string[] = [];
    let catchUps = 0;
    const l = keepListening(tracked, uniqueName('keep'), () => {}, {
      logger: makeLogger('info', {}, { write: (line: string) => void lines.push(line) }),
      what: 'test notifications',
      fallback: 'nothing',
      retryMs: { min: 20, max: 40 },
      onResume: () => {
        catchUps++;
        if (catchUps === 2) throw new Error('catch-up failed (test)');
      },
    });
    onCleanup(() => l.stop());
    expect(await l.first).toBe(false);
    // Listening on the second attempt: what was announced before could not be heard.
    await waitFor(() => l.heard, 'listening');
    expect(catchUps).toBe(1);
    // The adapter's reconnect: the callback it was given throws, and the failure is said.
    expect(() => adapterResume!()).not.toThrow();
    expect(catchUps).toBe(2);
    expect(lines.some((x) => x.includes('catch-up failed (test)') && x.includes('test notifications'))).toBe(true);
    adapterResume!();
    expect(catchUps).toBe(3);
  });

  it('stops at once when stopped while an attempt is still running', async () => {
    const { db } = await makeTestDb();
    let fail!: (err: Error) => void;
    let calls = 0;
    const hanging: Database = {
      ...failingListen(db, 0).db,
      listen: () => {
        calls++;
        return new Promise((_, reject) => (fail = reject));
      },
    };
    const l = keepListening(hanging, uniqueName('keep'), () => {}, {
      logger: silentLogger,
      what: 'test notifications',
      fallback: 'nothing',
      retryMs: { min: 60_000, max: 60_000 },
    });
    await waitFor(() => calls === 1, 'the first attempt');
    const stopped = l.stop();
    fail(new Error('connect timed out')); // the attempt ends after stop(): no back-off may follow
    const t0 = Date.now();
    await stopped;
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(await l.first).toBe(false);
    expect(calls).toBe(1);
  });

  it('stops trying when stopped during its back-off', async () => {
    const { db } = await makeTestDb();
    const flaky = failingListen(db, Infinity);
    const l = keepListening(flaky.db, uniqueName('keep'), () => {}, {
      logger: silentLogger,
      what: 'test notifications',
      fallback: 'nothing',
      retryMs: { min: 60_000, max: 60_000 },
    });
    expect(await l.first).toBe(false);
    const t0 = Date.now();
    await l.stop(); // would wait out the minute if the back-off were not cut short
    expect(Date.now() - t0).toBeLessThan(5_000);
    expect(flaky.calls()).toBe(1);
  });
});

describe.skipIf(!onServices)('LISTEN on PostgreSQL', () => {
  async function setup(applicationName?: string) {
    const { db: direct, url } = await makeTestDb();
    const u = new URL(url!);
    const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port || 5432) });
    onCleanup(() => proxy.close());
    const db = connectPostgres({ url: proxy.urlFor(url!), max: 2, applicationName });
    onCleanup(() => db.close());
    return { db, direct, proxy };
  }

  it('keeps nothing of a listen() that failed: a later connection does not call its callback', async () => {
    const { db, direct, proxy } = await setup();
    const [a, b] = [uniqueName('failed'), uniqueName('later')];
    const fromA: string[] = [];
    const fromB: string[] = [];
    proxy.cut();
    await expect(db.listen(a, (p) => fromA.push(p))).rejects.toThrow();
    proxy.restore();
    onCleanup(await db.listen(b, (p) => fromB.push(p)));
    // One connection delivers in commit order: once B's notification is in, A's (sent first)
    // would be too, had the failed call's callback been kept and its channel listened to.
    await direct.query('SELECT pg_notify($1, $2)', [a, 'to-the-failed-call']);
    await heardBy(direct, b, fromB)('to-b');
    expect(fromA).toEqual([]);
  });

  it('gives up a LISTEN connection that stopped answering, and listens on a new one', async () => {
    const { db, direct, proxy } = await setup();
    const [a, b] = [uniqueName('before'), uniqueName('after')];
    const fromA: string[] = [];
    const fromB: string[] = [];
    onCleanup(await db.listen(a, (p) => fromA.push(p)));
    await heardBy(direct, a, fromA)('a-before');
    proxy.stall(); // the LISTEN connection goes silent without closing
    await expect(db.listen(b, (p) => fromB.push(p))).rejects.toThrow(/timeout/i); // after 10 s
    // Kept, that connection would queue this LISTEN behind the stuck one, and time out again.
    onCleanup(await db.listen(b, (p) => fromB.push(p)));
    await heardBy(direct, b, fromB)('b-after');
    await heardBy(direct, a, fromA)('a-after'); // listened again on the new connection
  }, 60_000);

  it('refuses to listen once closed', async () => {
    const { db } = await setup();
    await db.close();
    await expect(db.listen(uniqueName('closed'), () => {})).rejects.toThrow(/closed/);
  });

  it('listens again after the connection drops', async () => {
    const { db, direct, proxy } = await setup();
    const channel = uniqueName('drop');
    const got: string[] = [];
    onCleanup(await db.listen(channel, (p) => got.push(p)));
    const heard = heardBy(direct, channel, got);
    await heard('before');
    proxy.cut();
    proxy.restore();
    await heard('after-drop');
  });

  it('tells a listener that asked when it listens again after a drop, and only then (notifications may have been missed)', async () => {
    const { db, direct, proxy } = await setup();
    const channel = uniqueName('resume');
    const got: string[] = [];
    let resumed = 0;
    let resumedAtDrop = -1;
    onCleanup(await db.listen(channel, (p) => got.push(p), () => resumed++));
    const heard = heardBy(direct, channel, got);
    await heard('before');
    expect(resumed).toBe(0);
    proxy.cut();
    resumedAtDrop = resumed;
    proxy.restore();
    await waitFor(() => resumed === 1, 'told it listens again');
    expect(resumedAtDrop).toBe(0);
    await heard('after-drop');
    expect(resumed).toBe(1);
  });

  it('leaves no connection open when closed while the LISTEN connection is being made', async () => {
    const applicationName = uniqueName('closing');
    const { db, direct, proxy } = await setup(applicationName);
    proxy.freeze(); // TCP connects, nothing is forwarded: the connect hangs
    const listening = db.listen(uniqueName('closing'), () => {}).catch(() => undefined);
    await waitFor(() => proxy.accepted() > 0, 'the LISTEN connection to be attempted');
    await db.close();
    proxy.thaw();
    await listening;
    await waitFor(async () => {
      const { rows } = await direct.query<{ n: number }>('SELECT count(*)::int AS n FROM pg_stat_activity WHERE application_name = $1', [`${applicationName}-listen`]);
      return rows[0].n === 0;
    }, 'the LISTEN connection to be gone');
  });
});
