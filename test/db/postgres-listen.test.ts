// LISTEN on PostgreSQL goes through one dedicated connection. When that connection cannot be made
// at first, or drops later, notifications must resume by themselves once the server is reachable:
// the relay and the queue consumers fall back to polling meanwhile, but only until then.
import { describe, expect, it } from 'vitest';
import { connectPostgres } from '../../src/db/postgres.ts';
import { makeTestDb, onCleanup, onServices, waitFor } from '../support/env.ts';
import { startTcpProxy } from '../support/tcp-proxy.ts';

const CHANNEL = 'ventros_listen_test';

describe.skipIf(!onServices)('LISTEN on PostgreSQL', () => {
  async function setup() {
    const { db: direct, url } = await makeTestDb();
    const u = new URL(url!);
    const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port || 5432) });
    onCleanup(() => proxy.close());
    const db = connectPostgres({ url: proxy.urlFor(url!), max: 2 });
    onCleanup(() => db.close());
    const got: string[] = [];
    // A notification sent until one arrives: the listener may still be (re)connecting.
    const heard = (marker: string) =>
      waitFor(async () => {
        await direct.query('SELECT pg_notify($1, $2)', [CHANNEL, marker]);
        return got.includes(marker);
      }, `notification ${marker}`, 15_000, 100);
    return { db, proxy, got, heard };
  }

  it('keeps trying when the first connect fails, and delivers once it succeeds', async () => {
    const { db, proxy, got, heard } = await setup();
    proxy.cut();
    await expect(db.listen(CHANNEL, (p) => got.push(p))).rejects.toThrow();
    proxy.restore();
    await heard('after-first-failure');
  });

  it('reconnects after the connection drops', async () => {
    const { db, proxy, got, heard } = await setup();
    const unlisten = await db.listen(CHANNEL, (p) => got.push(p));
    onCleanup(unlisten);
    await heard('before');
    proxy.cut();
    proxy.restore();
    await heard('after-drop');
    expect(got).toContain('before');
  });
});
