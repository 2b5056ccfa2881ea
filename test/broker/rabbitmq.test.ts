// What only the RabbitMQ adapter has to get right: its topology, the crash path through Q.dlq, and
// living through a broken connection. Queue semantics shared with the Postgres broker are in the
// conformance suite. Faults come from a TCP proxy, never from stopping the shared server.
import amqp from 'amqplib';
import type { ChannelModel } from 'amqplib';
import { beforeAll, describe, expect, it } from 'vitest';
import { SEND_HEADER, type Broker, type Delivery } from '../../src/broker/broker.ts';
import { connectRabbitBroker, deleteNamespace, PublishError, type RabbitBrokerOptions } from '../../src/broker/rabbitmq.ts';
import { CRASHED_ERROR } from '../../src/broker/rabbitmq-consumer.ts';
import type { Database } from '../../src/db/database.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { markUnavailable } from '../../src/db/unavailable.ts';
import { makeTestDb, onCleanup, onServices, uniqueName, waitFor } from '../support/env.ts';
import { startTcpProxy, type TcpProxy } from '../support/tcp-proxy.ts';

const amqpUrl = process.env.AMQP_URL ?? '';

describe.runIf(onServices)('RabbitMQ broker adapter', () => {
  // onCleanup registers its afterAll on first use; that must happen while the suite is collected,
  // not inside beforeAll, or vitest never runs it.
  onCleanup(async () => {});
  let db: Database;

  beforeAll(async () => {
    ({ db } = await makeTestDb());
  });

  async function openBroker(opts: Partial<RabbitBrokerOptions> = {}): Promise<Broker & { ns: string }> {
    const ns = opts.namespace ?? `${uniqueName('vt')}.`;
    const broker = await connectRabbitBroker({ url: amqpUrl, db, retryDelaysMs: [50, 100], ...opts, namespace: ns });
    onCleanup(async () => {
      await broker.close();
      await deleteNamespace(amqpUrl, ns);
    });
    return Object.assign(broker, { ns });
  }

  async function rawConnection(): Promise<ChannelModel> {
    const conn = await amqp.connect(amqpUrl);
    conn.on('error', () => {});
    onCleanup(() => conn.close().catch(() => {}));
    return conn;
  }

  /** Whether a queue exists (a passive declare of a missing queue closes its channel). */
  async function queueExists(conn: ChannelModel, name: string): Promise<boolean> {
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    try {
      await ch.checkQueue(name);
      await ch.close();
      return true;
    } catch {
      return false;
    }
  }

  async function proxied(opts: Partial<RabbitBrokerOptions> = {}): Promise<{ proxy: TcpProxy; broker: Broker & { ns: string } }> {
    const u = new URL(amqpUrl);
    const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port || 5672) });
    onCleanup(() => proxy.close());
    const broker = await openBroker({ ...opts, url: proxy.urlFor(amqpUrl) });
    return { proxy, broker };
  }

  const msg = (id: string, headers?: Record<string, string>) => ({ messageId: id, body: Buffer.from(`{"id":"${id}"}`), headers });

  it('declares the same topology twice, and again from a second broker, without errors', async () => {
    const a = await openBroker();
    const specs = [{ name: 'orders', bindings: ['order.*', 'refund.#'] }];
    await a.declareQueues(specs);
    await a.declareQueues(specs);
    const b = await openBroker({ namespace: a.ns });
    await b.declareQueues(specs);

    await a.publish('order.created', [msg('m1')]);
    await a.publish('refund.issued.partially', [msg('m2')]);
    await waitFor(async () => (await b.stats(['orders']))[0]?.depth === 2, 'both events routed to orders');
  });

  it('gives each queue a quorum work queue with a delivery limit, a dlq and one wait queue per delay', async () => {
    const broker = await openBroker({ retryDelaysMs: [50, 5000, 120_000], deliveryLimit: 3 });
    await broker.declareQueues([{ name: 'jobs' }]);
    const conn = await rawConnection();
    const ns = broker.ns;
    for (const name of ['jobs', 'jobs.dlq', 'jobs.retry.50ms', 'jobs.retry.5s', 'jobs.retry.2m']) {
      expect(await queueExists(conn, `${ns}${name}`), name).toBe(true);
    }
    // Re-declaring with other arguments fails (406), which proves what the queue was declared with.
    const declare = async (args: Record<string, unknown>) => {
      const ch = await conn.createChannel();
      ch.on('error', () => {});
      await ch.assertQueue(`${ns}jobs`, { durable: true, arguments: args });
      await ch.close();
    };
    const dlx = { 'x-dead-letter-exchange': '', 'x-dead-letter-routing-key': `${ns}jobs.dlq` };
    await declare({ 'x-queue-type': 'quorum', 'x-delivery-limit': 3, ...dlx });
    await expect(declare({ 'x-queue-type': 'quorum', 'x-delivery-limit': 4, ...dlx })).rejects.toThrow(/PRECONDITION_FAILED/);
  });

  it('moves a message that crashed its consumer past the delivery limit into dead_letters, keeping what keepInDeadLetters makes of it', async () => {
    const broker = await openBroker({ deliveryLimit: 2 });
    await broker.declareQueues([{ name: 'poison' }]);
    broker.keepInDeadLetters('poison', async (d) => Buffer.from(`${d.body.toString('utf8')} as kept`));
    await broker.send('poison', [msg('p1', { 'x-project-id': 'none' })]);
    // A consumer that "dies" on every delivery: each requeue counts as a failed delivery.
    const conn = await rawConnection();
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    let deliveries = 0;
    await ch.consume(`${broker.ns}poison`, (m) => {
      deliveries++;
      if (m) ch.nack(m, false, true);
    });
    const row = await waitFor(async () => {
      const r = await db.query(`SELECT message_id, routing_key, error, headers, convert_from(body, 'UTF8') AS body FROM dead_letters WHERE queue = 'poison'`);
      return r.rows[0];
    }, 'the drainer recorded the poison message');
    expect(row).toMatchObject({ message_id: 'p1', routing_key: 'poison', error: CRASHED_ERROR, headers: { 'x-project-id': 'none' }, body: '{"id":"p1"} as kept' });
    expect(deliveries).toBe(3);
    expect((await broker.stats(['poison']))[0]).toMatchObject({ depth: 0, deadLetters: 1 });
  });

  it('keeps the routing key and headers of a message across its retry detour', async () => {
    const broker = await openBroker();
    await broker.declareQueues([{ name: 'audit', bindings: ['contact.*'] }]);
    const seen: Delivery[] = [];
    await broker.consume('audit', async (d) => {
      seen.push(d);
      if (d.attempt === 1) throw 'not an Error';
    });
    await broker.publish('contact.created', [msg('e1', { 'x-project-id': 'p' })]);
    await waitFor(() => seen.length === 2, 'the retry arrived');
    expect(seen.map((d) => [d.attempt, d.routingKey, d.queue, d.messageId])).toEqual([
      [1, 'contact.created', 'audit', 'e1'],
      [2, 'contact.created', 'audit', 'e1'],
    ]);
    // The send id too: the detour is the same send, so its death would be recorded once.
    expect(seen[0]!.headers[SEND_HEADER]).toMatch(/^[0-9a-f-]{36}$/);
    expect(seen[1]!.headers).toEqual({ 'x-project-id': 'p', [SEND_HEADER]: seen[0]!.headers[SEND_HEADER] });
    await waitFor(async () => (await broker.stats(['audit']))[0]?.depth === 0, 'acked');
  });

  it('holds a message while its dead letter cannot be written, and records it once the database answers', async () => {
    let broken = true;
    let refused = 0;
    const query = (async (sql: string, params?: readonly unknown[]) => {
      if (broken && sql.includes('INSERT INTO dead_letters')) {
        refused++;
        throw new Error('database is down');
      }
      return db.query(sql, params);
    }) as Database['query'];
    const broker = await openBroker({ db: { ...db, query }, retryDelaysMs: [] });
    await broker.declareQueues([{ name: 'fragile' }]);
    await broker.consume('fragile', async () => {
      throw new Error('always fails');
    });
    await broker.send('fragile', [msg('h1')]);
    await waitFor(() => refused >= 2, 'the insert was retried');
    expect((await broker.stats(['fragile']))[0]).toMatchObject({ depth: 1, deadLetters: 0 });

    broken = false;
    await waitFor(async () => (await broker.stats(['fragile']))[0]?.deadLetters === 1, 'dead letter recorded');
    const r = await db.query(`SELECT message_id, attempts, error FROM dead_letters WHERE queue = 'fragile'`);
    expect(r.rows).toEqual([{ message_id: 'h1', attempts: 1, error: 'Error: always fails' }]);
    await waitFor(async () => (await broker.stats(['fragile']))[0]?.depth === 0, 'acked');
  });

  it('spends no attempt of a message while the database is away, so an outage dead-letters nothing', async () => {
    // The handlers' database and the broker's (for dead letters) both behind a proxy we cut.
    const t = await makeTestDb();
    const u = new URL(t.url!);
    const proxy = await startTcpProxy({ host: u.hostname, port: Number(u.port || 5432) });
    onCleanup(() => proxy.close());
    const viaProxy = connectPostgres({ url: proxy.urlFor(t.url!), max: 4, idleTimeoutMs: 1000 });
    onCleanup(() => viaProxy.close());
    const broker = await openBroker({ db: viaProxy, retryDelaysMs: [20, 20] });
    await broker.declareQueues([{ name: 'needs-db' }]);
    let refused = 0;
    const handled = new Map<string, number>();
    await broker.consume('needs-db', async (d) => {
      try {
        await viaProxy.query('SELECT 1');
      } catch (err) {
        refused++;
        throw err;
      }
      handled.set(d.messageId, d.attempt);
    });
    proxy.cut();
    await broker.send('needs-db', ['o1', 'o2', 'o3'].map((id) => msg(id)));
    // Ten times the three attempts each message has: before, all three were dead-lettered here.
    await waitFor(() => refused >= 30, 'handlers failed against the missing database');
    proxy.restore();
    await waitFor(() => handled.size === 3, 'every message handled once the database answers');
    // Each succeeded on its first attempt: the outage spent none.
    expect([...handled.entries()].sort()).toEqual([['o1', 1], ['o2', 1], ['o3', 1]]);
    expect((await t.db.query('SELECT count(*)::int AS n FROM dead_letters')).rows[0].n).toBe(0);
    await waitFor(async () => (await broker.stats(['needs-db']))[0]?.depth === 0, 'acked');
  });

  it('sends a message round, its last attempt unspent, while the database is away for its dead letter', async () => {
    let away = true;
    let refused = 0;
    const query = (async (sql: string, params?: readonly unknown[]) => {
      if (away && sql.includes('INSERT INTO dead_letters')) {
        refused++;
        throw markUnavailable(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }));
      }
      return db.query(sql, params);
    }) as Database['query'];
    const broker = await openBroker({ db: { ...db, query }, retryDelaysMs: [20] });
    await broker.declareQueues([{ name: 'last-try' }]);
    const attempts: number[] = [];
    await broker.consume('last-try', async (d) => {
      attempts.push(d.attempt);
      throw new Error('a failure of its own');
    });
    await broker.send('last-try', [msg('lt1')]);
    // Not held unacknowledged (past the broker's consumer timeout it would be requeued towards
    // Q.dlq): it goes round, and its last attempt is tried again each time.
    await waitFor(() => refused >= 3, 'the dead letter refused a few times');
    expect(attempts.slice(0, 4)).toEqual([1, 2, 2, 2]);
    away = false;
    const row = await waitFor(async () => (await db.query(`SELECT message_id, attempts, error FROM dead_letters WHERE queue = 'last-try'`)).rows[0], 'the dead letter');
    expect(row).toEqual({ message_id: 'lt1', attempts: 2, error: 'Error: a failure of its own' });
    await waitFor(async () => (await broker.stats(['last-try']))[0]?.depth === 0, 'acked');
  });

  it('counts the failures of a message that has gone round for an outage for over an hour', async () => {
    // A message whose own query brings the server down looks like an outage: it may go round
    // without spending attempts only for so long in its life. This one's rounds began 61 minutes
    // ago; each failure now counts, through its retries to its dead letter.
    const broker = await openBroker({ retryDelaysMs: [20, 40] });
    await broker.declareQueues([{ name: 'outage-cap' }]);
    const attempts: number[] = [];
    await broker.consume('outage-cap', async (d) => {
      attempts.push(d.attempt);
      throw markUnavailable(new Error('Connection terminated unexpectedly'));
    });
    const conn = await rawConnection();
    const ch = await conn.createConfirmChannel();
    ch.sendToQueue(`${broker.ns}outage-cap`, Buffer.from('{}'), { persistent: true, messageId: 'long-out', headers: { 'x-outage-since': Date.now() - 61 * 60_000 } });
    await ch.waitForConfirms();
    const row = await waitFor(async () => (await db.query(`SELECT message_id, attempts FROM dead_letters WHERE queue = 'outage-cap'`)).rows[0], 'the dead letter');
    expect(row).toEqual({ message_id: 'long-out', attempts: 3 });
    expect(attempts).toEqual([1, 2, 3]);
  });

  it('stops a consumer after its in-flight handler, or leaves the message to the queue past the timeout', async () => {
    const broker = await openBroker();
    await broker.declareQueues([{ name: 'slow' }]);
    const started: string[] = [];
    let release = () => {};
    const first = await broker.consume('slow', (d) => {
      started.push(d.messageId);
      return new Promise<void>((r) => (release = r));
    });
    await broker.send('slow', [msg('s1')]);
    await waitFor(() => started.length === 1, 'the handler started');
    let stopped = false;
    const stopping = first.stop(10_000).then(() => void (stopped = true));
    await broker.send('slow', [msg('s1b')]); // after the cancel: must stay in the queue
    await broker.stats(['slow']);
    expect(stopped).toBe(false); // only the handler finishing (or 10 s) can end stop()
    release();
    await stopping;
    expect(started).toEqual(['s1']);
    // RabbitMQ drops a cancelled consumer from its count a moment after the cancel is confirmed.
    await waitFor(async () => (await broker.stats(['slow']))[0]?.consumers === 0, 'the consumer gone from the queue');
    expect((await broker.stats(['slow']))[0]).toMatchObject({ depth: 1, consumers: 0 });
    expect(started).toEqual(['s1']);

    const second = await broker.consume('slow', (d) => {
      started.push(d.messageId);
      return new Promise<void>(() => {}); // never settles
    });
    await waitFor(() => started.length === 2, 'the stuck handler started on s1b');
    const t0 = Date.now();
    await second.stop(200);
    // Bounded by the 200 ms asked for, not the 10 s default (or forever, for this handler). The
    // bound sits halfway to that default, so a slow machine does not fail it.
    expect(Date.now() - t0).toBeLessThan(5000);
    await waitFor(async () => (await broker.stats(['slow']))[0]?.depth === 1, 's1b is back in the queue');
  });

  it('resolves a publish nobody is bound to, and rejects a send to a queue that does not exist', async () => {
    const broker = await openBroker();
    await broker.publish('nobody.listens', [msg('u1')]);
    const err = await broker.send('no.such.queue', [msg('u2')]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(PublishError);
    expect((err as PublishError).reason).toBe('unroutable');
  });

  it('rejects a send at once while disconnected, and after timeoutMs when the broker stops answering', async () => {
    const { proxy, broker } = await proxied();
    await broker.declareQueues([{ name: 'raw' }]);

    proxy.freeze();
    let started = Date.now();
    const late = await broker.send('raw', [msg('f1')], { timeoutMs: 200 }).catch((e: unknown) => e);
    expect((late as PublishError).reason).toBe('timeout');
    // The send's own 200 ms, not the broker's 30 s confirm timeout (with room for a slow machine).
    expect(Date.now() - started).toBeLessThan(10_000);
    proxy.thaw();

    proxy.cut();
    await waitFor(() => broker.check().then(() => false, () => true), 'check() fails while cut');
    started = Date.now();
    const down = await broker.send('raw', [msg('f2')], { timeoutMs: 5000 }).catch((e: unknown) => e);
    expect((down as PublishError).reason).toBe('disconnected');
    // At once, not after the 5 s timeoutMs: the reason above says why it failed, and this bound,
    // half that timeout, says it did not wait for it.
    expect(Date.now() - started).toBeLessThan(2500);
    await expect(broker.publish('x.y', [msg('f3')])).rejects.toBeInstanceOf(PublishError);
    proxy.restore();
  });

  it('refuses at once what would owe the broker more than the bound, and tears down a live connection that confirms nothing', async () => {
    const { proxy, broker } = await proxied({ maxUnconfirmedBytes: 64 * 1024, confirmStallMs: 300 });
    await broker.declareQueues([{ name: 'owed' }]);
    const big = (id: string) => ({ messageId: id, body: Buffer.alloc(40 * 1024, 'x') });
    // Two sends in the same turn: the second would owe 80 KiB while the first is unconfirmed.
    const first = broker.send('owed', [big('o1')]);
    const second = await broker.send('owed', [big('o2')]).catch((e: unknown) => e);
    expect((second as PublishError).reason).toBe('backlog');
    await first; // the first is confirmed as usual
    await broker.send('owed', [big('o3')]); // and the bound is free again

    // A broker that keeps the connection but confirms nothing (frozen: heartbeats would take 20 s
    // to notice). The first send times out and the next ones find the bound full; once nothing
    // was confirmed for 300 ms, the connection is torn down: sends then fail at once as
    // disconnected, and what was owed is released. (Before, a full bound refused every send for
    // good: only a timed-out send looked for a stall.)
    proxy.freeze();
    const t0 = Date.now();
    const reasons = new Set<string>();
    let n = 0;
    await waitFor(async () => {
      const err = await broker.send('owed', [big(`s${n++}`)], { timeoutMs: 100 }).catch((e: unknown) => e);
      reasons.add((err as PublishError).reason);
      return (err as PublishError).reason === 'disconnected';
    }, 'the stalled connection torn down', 10_000);
    expect(reasons.has('backlog')).toBe(true);
    expect(Date.now() - t0).toBeLessThan(10_000); // long before a 20 s heartbeat timeout
    proxy.thaw();
    await waitFor(() => broker.send('owed', [msg('s2')], { timeoutMs: 2000 }).then(() => true, () => false), 'sending again after reconnecting', 20_000);
    await waitFor(async () => (await broker.stats(['owed']))[0]?.depth >= 3, 'o1, o3 and s2 (at least) in the queue');
  });

  it('reconnects by itself after the connection is cut and its consumers resume', async () => {
    const { proxy, broker } = await proxied();
    await broker.declareQueues([{ name: 'events', bindings: ['contact.#'] }]);
    const got: string[] = [];
    await broker.consume('events', async (d) => void got.push(d.messageId), { concurrency: 4 });
    await broker.publish('contact.created', [msg('before')]);
    await waitFor(() => got.includes('before'), 'consumed before the cut');

    proxy.cut();
    await waitFor(() => broker.check().then(() => false, () => true), 'check() fails while cut');
    proxy.restore();
    await waitFor(() => broker.check().then(() => true), 'check() passes after the restore');
    expect(proxy.accepted()).toBeGreaterThan(1);

    await broker.publish('contact.updated', [msg('after')]);
    await broker.send('events', [msg('direct')]);
    await waitFor(() => got.includes('after') && got.includes('direct'), 'consumed after the restore');
    const [stats] = await broker.stats(['events']);
    expect(stats).toMatchObject({ queue: 'events', depth: 0, consumers: 1 });
  });

  it('closes while disconnected and refuses work afterwards', async () => {
    const { proxy, broker } = await proxied();
    proxy.cut();
    await waitFor(() => broker.check().then(() => false, () => true), 'check() fails while cut');
    await broker.close();
    const before = proxy.accepted();
    proxy.restore();
    await expect(broker.send('q', [msg('c1')])).rejects.toMatchObject({ reason: 'closed' });
    await expect(broker.check()).rejects.toThrow();
    expect(proxy.accepted()).toBe(before);
  });
});
