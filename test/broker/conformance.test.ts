// The one conformance suite of the broker port: every adapter available on this target runs it
// (embedded: the Postgres broker on PGlite; services: RabbitMQ, and the Postgres broker on real
// PostgreSQL). Queue names are unique per test; outcomes are awaited, never slept for.
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { PROJECT_HEADER, SEND_HEADER, type Broker, type Consumer, type Delivery, type Handler, type QueueStats } from '../../src/broker/broker.ts';
import { getDeadLetter, listDeadLetters, replayDeadLetter } from '../../src/broker/dead-letters.sql.ts';
import { makePostgresBroker } from '../../src/broker/postgres-broker.ts';
import type { Database } from '../../src/db/database.ts';
import { markUnavailable } from '../../src/db/unavailable.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { brokerKinds, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, onServices, uniqueName, waitFor } from '../support/env.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
onCleanup(async () => {}); // registers the file's cleanup hook while the file is being collected

const msg = (body: string, headers?: Record<string, string>) => ({ messageId: uuidv7(), body: Buffer.from(body), ...(headers ? { headers } : {}) });
const ticks = (ms: number) => new Promise((r) => setTimeout(r, ms)); // simulated handler work only

/** Waits for a queue's stats to match; on timeout the assertion shows the last value seen. */
async function expectStats(broker: Broker, queue: string, want: Partial<QueueStats>): Promise<void> {
  let last: QueueStats | undefined;
  const matches = (s: QueueStats) => Object.entries(want).every(([k, v]) => s[k as keyof QueueStats] === v);
  await waitFor(async () => ([last] = await broker.stats([queue])) && matches(last), `stats of ${queue}`).catch(() => {
    expect(last).toMatchObject(want);
  });
}

describe.each(brokerKinds())('%s broker conformance', (kind) => {
  let db: Database;
  let dbUrl: string | undefined;
  const consumers: Consumer[] = [];
  const project = uuidv7();

  beforeAll(async () => {
    ({ db, url: dbUrl } = await makeTestDb());
  });
  afterEach(async () => {
    await Promise.all(consumers.splice(0).map((c) => c.stop(2000)));
  });
  async function consume(b: Broker, queue: string, handler: Handler, concurrency = 1): Promise<Consumer> {
    const c = await b.consume(queue, handler, { concurrency });
    consumers.push(c);
    return c;
  }

  it('resolves publish and send only once the message is durable', async () => {
    const q = uniqueName('q');
    const first = await makeTestBroker(kind, db);
    await first.declareQueues([{ name: q, bindings: ['contact.created'] }]);
    const published = msg('{"n":1}', { [PROJECT_HEADER]: project });
    const sent = msg('{"n":2}');
    await first.publish('contact.created', [published]);
    await first.send(q, [sent]);
    if (kind === 'postgres') {
      // Read back on the database right away: the rows are committed, not just queued in memory.
      const r = await db.query('SELECT message_id FROM queue_messages WHERE queue = $1 ORDER BY id', [q]);
      expect(r.rows.map((x) => x.message_id)).toEqual([published.messageId, sent.messageId]);
    }
    // A consumer on a broker connected only afterwards gets both.
    const later = await makeTestBroker(kind, db, { namespace: first.namespace });
    const got: Delivery[] = [];
    await consume(later, q, async (m) => void got.push(m));
    await waitFor(() => got.length === 2, 'both messages delivered');
    const byId = new Map(got.map((m) => [m.messageId, m]));
    expect(byId.get(published.messageId)).toMatchObject({ queue: q, routingKey: 'contact.created', attempt: 1, headers: { [PROJECT_HEADER]: project } });
    expect(byId.get(published.messageId)!.body.equals(published.body)).toBe(true);
    expect(byId.get(sent.messageId)).toMatchObject({ queue: q, routingKey: q, attempt: 1, headers: {} });
    expect(Buffer.isBuffer(byId.get(sent.messageId)!.body)).toBe(true);
  });

  it('routes by topic: * is one word, # any number, exact keys, one copy per queue', async () => {
    const b = await makeTestBroker(kind, db);
    const [star, hash, exact, both] = ['star', 'hash', 'exact', 'both'].map((n) => uniqueName(n));
    await b.declareQueues([
      { name: star, bindings: ['contact.*'] },
      { name: hash, bindings: ['#'] },
      { name: exact, bindings: ['contact.created', 'message.received'] },
      { name: both, bindings: ['contact.created', 'contact.*'] },
    ]);
    const keys = ['contact.created', 'contact.a.b', 'message.received', 'other.thing'];
    for (const k of keys) await b.publish(k, [msg(k)]);
    const got = new Map<string, string[]>([star, hash, exact, both].map((q) => [q, []]));
    for (const q of got.keys()) await consume(b, q, async (m) => void got.get(q)!.push(m.routingKey));
    const want = new Map([[star, ['contact.created']], [hash, keys], [exact, ['contact.created', 'message.received']], [both, ['contact.created']]]);
    for (const [q, keysWanted] of want) {
      await waitFor(async () => got.get(q)!.length >= keysWanted.length && (await b.stats([q]))[0].depth === 0, `${q} drained`);
      expect([...got.get(q)!].sort()).toEqual([...keysWanted].sort());
    }
  });

  it('hands each message to exactly one of three competing consumers', async () => {
    const q = uniqueName('q');
    const brokers = [await makeTestBroker(kind, db)];
    for (let i = 1; i < 3; i++) brokers.push(await makeTestBroker(kind, db, { namespace: brokers[0].namespace }));
    await brokers[0].declareQueues([{ name: q, bindings: ['contact.updated'] }]);
    const seen = new Map<string, number>();
    const perConsumer = [0, 0, 0];
    for (const [i, b] of brokers.entries()) {
      await consume(b, q, async (m) => {
        seen.set(m.messageId, (seen.get(m.messageId) ?? 0) + 1);
        perConsumer[i]++;
        await ticks(1);
      });
    }
    const msgs = Array.from({ length: 300 }, (_, i) => msg(String(i)));
    for (let i = 0; i < 300; i += 100) await brokers[0].publish('contact.updated', msgs.slice(i, i + 100));
    await waitFor(async () => [...seen.values()].reduce((a, n) => a + n, 0) >= 300 && (await brokers[0].stats([q]))[0].depth === 0, '300 handled', 60_000);
    expect(seen.size).toBe(300);
    expect(msgs.every((m) => seen.get(m.messageId) === 1)).toBe(true);
    expect(perConsumer.filter((n) => n > 0).length).toBeGreaterThanOrEqual(2);
  });

  it('never runs more handlers at once than the concurrency, and reaches it', async () => {
    const b = await makeTestBroker(kind, db);
    const q = uniqueName('q');
    await b.declareQueues([{ name: q }]);
    await b.send(q, Array.from({ length: 12 }, (_, i) => msg(String(i))));
    let running = 0;
    let most = 0;
    let done = 0;
    await consume(b, q, async () => {
      most = Math.max(most, ++running);
      await ticks(40);
      running--;
      done++;
    }, 3);
    await waitFor(() => done === 12, '12 handled');
    expect(most).toBe(3);
  });

  it('retries a failing handler after each delay, dead-letters it, and replays it', async () => {
    const b = await makeTestBroker(kind, db, { retryDelaysMs: [200, 400] });
    const q = uniqueName('q');
    await b.declareQueues([{ name: q, bindings: ['contact.deleted'] }]);
    const headers = { [PROJECT_HEADER]: project, 'x-trace': 'abc' };
    const original = msg('{"contact":"c1"}', headers);
    const calls: Array<{ at: number; attempt: number; send?: string }> = [];
    const healed: Delivery[] = [];
    let healthy = false;
    await consume(b, q, async (m) => {
      if (healthy) return void healed.push(m);
      calls.push({ at: Date.now(), attempt: m.attempt, send: m.headers[SEND_HEADER] });
      throw new Error(`boom on attempt ${m.attempt}`);
    });
    await b.publish('contact.deleted', [original]);

    const dl = await waitFor(async () => (await listDeadLetters(db, { queue: q, limit: 10 })).items[0], 'dead letter recorded');
    expect(calls.map((c) => c.attempt)).toEqual([1, 2, 3]);
    expect(calls[1].at - calls[0].at).toBeGreaterThanOrEqual(200);
    expect(calls[2].at - calls[1].at).toBeGreaterThanOrEqual(400);
    expect(dl).toMatchObject({ queue: q, messageId: original.messageId, routingKey: 'contact.deleted', attempts: 3, projectId: project, headers, replayedAt: null });
    expect(dl.error).toContain('boom on attempt 3');
    expect(dl.body.equals(original.body)).toBe(true);
    expect((await listDeadLetters(db, { projectId: project, limit: 500 })).items.map((d) => d.id)).toContain(dl.id);
    await expectStats(b, q, { depth: 0, retrying: 0, deadLetters: 1 });

    healthy = true;
    const replayed = await replayDeadLetter(db, b, dl.id);
    expect(replayed).toMatchObject({ id: dl.id, replayCount: 1 });
    await waitFor(() => healed.length === 1, 'replayed message handled');
    expect(healed[0]).toMatchObject({ messageId: original.messageId, routingKey: 'contact.deleted', attempt: 1, headers });
    expect(healed[0].body.equals(original.body)).toBe(true);
    expect((await getDeadLetter(db, dl.id))?.replayedAt).toBeInstanceOf(Date);
    await expectStats(b, q, { depth: 0, deadLetters: 0 });
    expect(calls).toHaveLength(3);

    // Replayed and dead again: a death of its own beside the first, not merged into it.
    healthy = false;
    await replayDeadLetter(db, b, dl.id);
    const again = await waitFor(async () => (await listDeadLetters(db, { queue: q, limit: 10 })).items.find((d) => d.id !== dl.id), 'second dead letter');
    expect(again).toMatchObject({ messageId: original.messageId, attempts: 3, replayedAt: null, replayCount: 0 });
    expect((await listDeadLetters(db, { queue: q, limit: 10 })).items).toHaveLength(2);
    // RabbitMQ can deliver one send twice: each send has an id of its own, kept through its retries
    // (the Postgres broker never writes a death twice and sets none).
    // One send through all its retry hops: every attempt and its dead letter carry the same id.
    expect(new Set(calls.slice(0, 3).map((c) => c.send)).size).toBe(1);
    expect(calls[0].send).toBe(dl.headers[SEND_HEADER]);
    const sends = [dl, again].map((d) => d.headers[SEND_HEADER]);
    const uuid = /^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/;
    expect(sends.map((id) => (id === undefined ? 'none' : uuid.test(id) ? 'uuid' : id))).toEqual(kind === 'rabbitmq' ? ['uuid', 'uuid'] : ['none', 'none']);
    expect(new Set(sends).size).toBe(kind === 'rabbitmq' ? 2 : 1);
  });

  it('keeps in a dead letter what keepInDeadLetters makes of the message; a keeper that fails only delays the record', async () => {
    const b = await makeTestBroker(kind, db, { retryDelaysMs: [50], leaseMs: 1500 });
    const q = uniqueName('q');
    await b.declareQueues([{ name: q }]);
    const seen: Delivery[] = [];
    let refusals = 1;
    b.keepInDeadLetters(q, async (d) => {
      seen.push(d);
      if (refusals-- > 0) throw new Error('cannot say what to keep yet (test)');
      return Buffer.from(d.body.toString('utf8').replace('not-ours', '[left out]'));
    });
    await consume(b, q, async () => {
      throw new Error('always fails');
    });
    const original = msg('{"mine":"kept","theirs":"not-ours"}', { [PROJECT_HEADER]: project });
    await b.send(q, [original]);

    const dl = await waitFor(async () => (await listDeadLetters(db, { queue: q, limit: 10 })).items[0], 'dead letter recorded', 20_000);
    expect(dl.body.toString('utf8')).toBe('{"mine":"kept","theirs":"[left out]"}');
    expect(dl).toMatchObject({ messageId: original.messageId, attempts: 2, projectId: project });
    // Asked about the message as it came, on its last attempt, once per try to record its death.
    expect(seen.length).toBeGreaterThanOrEqual(2);
    expect(seen.every((d) => d.queue === q && d.messageId === original.messageId && d.body.equals(original.body))).toBe(true);
    await expectStats(b, q, { depth: 0, retrying: 0, deadLetters: 1 });
    expect((await listDeadLetters(db, { queue: q, limit: 10 })).items).toHaveLength(1);
  });

  it.runIf(kind === 'postgres')('keeps in the dead letter of a message that crashed its consumers what keepInDeadLetters makes of it', async () => {
    const q = uniqueName('q');
    const original = msg('{"mine":"kept","theirs":"not-ours"}', { [PROJECT_HEADER]: project });
    // Its first consumer dies holding it (no ack, no lease renewal)…
    const dying = killable(db);
    const doomed = makePostgresBroker({ db: dying.db, retryDelaysMs: [50], leaseMs: 300, pollMs: 100 });
    await doomed.declareQueues([{ name: q }]);
    const release: Array<() => void> = [];
    let held = false;
    await doomed.consume(q, () => ((held = true), new Promise<void>((r) => release.push(r))));
    onCleanup(async () => (release.forEach((r) => r()), doomed.close()));
    await doomed.send(q, [original]);
    await waitFor(() => held, 'the doomed consumer holds the message');
    dying.kill();
    // …and the next, allowed one delivery without an outcome, dead-letters it on its claim.
    const survivor = makePostgresBroker({ db, retryDelaysMs: [50], pollMs: 100, deliveryLimit: 1 });
    onCleanup(() => survivor.close());
    survivor.keepInDeadLetters(q, async (d) => Buffer.from(d.body.toString('utf8').replace('not-ours', '[left out]')));
    let handled = 0;
    await consume(survivor, q, async () => void handled++);
    const dl = await waitFor(async () => (await listDeadLetters(db, { queue: q, limit: 10 })).items[0], 'dead letter recorded', 20_000);
    expect(dl.error).toMatch(/^delivery limit exceeded/);
    expect(dl.body.toString('utf8')).toBe('{"mine":"kept","theirs":"[left out]"}');
    expect(handled).toBe(0);
  });

  it('spends no attempt on a failure that says the database is away, and none of those dead-letters', async () => {
    const b = await makeTestBroker(kind, db, { retryDelaysMs: [20, 40] });
    const q = uniqueName('q');
    await b.declareQueues([{ name: q }]);
    const seen: number[] = [];
    let away = 0;
    await consume(b, q, async (m) => {
      seen.push(m.attempt);
      // As the PostgreSQL adapter marks a connection it could not make; five times, more than the
      // message's three attempts.
      if (away < 5) {
        away++;
        throw markUnavailable(Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5432'), { code: 'ECONNREFUSED' }));
      }
      if (m.attempt === 1) throw new Error('a failure of its own, which counts');
    });
    await b.send(q, [msg('{}')]);
    await waitFor(() => seen.length === 7, 'the outage rounds, then a failure, then success');
    expect(seen).toEqual([1, 1, 1, 1, 1, 1, 2]);
    await expectStats(b, q, { depth: 0, retrying: 0, deadLetters: 0 });
    expect((await listDeadLetters(db, { queue: q, limit: 10 })).items).toEqual([]);
  });

  it('redelivers the messages of a consumer that died without acking', async () => {
    const b = await makeTestBroker(kind, db);
    const q = uniqueName('q');
    await b.declareQueues([{ name: q }]);
    const msgs = Array.from({ length: 6 }, (_, i) => msg(String(i)));
    await b.send(q, msgs);
    const held = new Set<string>();
    if (kind === 'postgres' && !onServices) {
      // PGlite lives inside this process, so no other process can open it. The dead process is
      // simulated in-process instead: a consumer whose handlers never settle and whose database
      // handle goes dead (no ack, no lease renewal), abandoned without stop(); short lease.
      const dying = killable(db);
      const doomed = makePostgresBroker({ db: dying.db, retryDelaysMs: [50, 100], leaseMs: 300, pollMs: 100 });
      const release: Array<() => void> = [];
      await doomed.consume(q, (m) => (held.add(m.messageId), new Promise<void>((r) => release.push(r))), { concurrency: 3 });
      onCleanup(async () => (release.forEach((r) => r()), doomed.close()));
      await waitFor(() => held.size === 3, 'the doomed consumer holds 3 messages');
      dying.kill();
    } else {
      const child = spawn(process.execPath, ['--import', 'tsx', 'test/broker/child-consumer.ts', kind, q], {
        cwd: ROOT,
        env: { ...process.env, CHILD_DATABASE_URL: dbUrl, CHILD_NAMESPACE: b.namespace, CHILD_LEASE_MS: '1000', CHILD_CONCURRENCY: '3' },
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      const exited = once(child, 'exit');
      onCleanup(async () => void child.kill('SIGKILL'));
      let out = '';
      child.stdout.on('data', (d: Buffer) => {
        out += d.toString();
        for (const [, id] of out.matchAll(/^got (\S+)$/gm)) held.add(id);
      });
      await waitFor(() => held.size === 3 || child.exitCode !== null, 'the child holds 3 messages', 30_000);
      expect(child.exitCode).toBeNull();
      child.kill('SIGKILL');
      await exited;
    }
    const got: Delivery[] = [];
    await consume(b, q, async (m) => void got.push(m), 6);
    await waitFor(() => got.length >= 6, 'all six delivered to the survivor', 30_000);
    expect(got.map((m) => m.messageId).sort()).toEqual(msgs.map((m) => m.messageId).sort());
    expect(got.filter((m) => held.has(m.messageId)).every((m) => m.attempt === 1)).toBe(true);
    await expectStats(b, q, { depth: 0 });
  });

  it("stops a consumer within the broker's shutdown timeout, waiting for running handlers until then", async () => {
    const b = await makeTestBroker(kind, db, { shutdownTimeoutMs: 200 });
    const q = uniqueName('q');
    await b.declareQueues([{ name: q }]);
    const release: Array<() => void> = [];
    const finished: string[] = [];
    const handler: Handler = async (m) => {
      await new Promise<void>((r) => release.push(r));
      finished.push(m.messageId);
    };
    onCleanup(async () => release.forEach((r) => r()));
    const stuck = await b.consume(q, handler, { concurrency: 1 });
    await b.send(q, [msg('held')]);
    await waitFor(() => release.length === 1, 'the handler running');
    // Its handler never ends: stop() gives up after the broker's 200 ms, not a default of seconds.
    const outcome = await Promise.race([stuck.stop().then(() => 'stopped'), new Promise((r) => setTimeout(() => r('still waiting after 5 s'), 5000))]);
    expect(outcome).toBe('stopped');
    expect(finished).toEqual([]);

    // A handler that ends within the timeout is waited for, and its message is done.
    const patient = await makeTestBroker(kind, db, { shutdownTimeoutMs: 20_000 });
    const q2 = uniqueName('q');
    await patient.declareQueues([{ name: q2 }]);
    const c = await patient.consume(q2, handler, { concurrency: 1 });
    const m = msg('finishes');
    await patient.send(q2, [m]);
    await waitFor(() => release.length === 2, 'the second handler running');
    const stopping = c.stop();
    release[1]();
    await stopping;
    expect(finished).toEqual([m.messageId]);
    await expectStats(patient, q2, { depth: 0, consumers: 0 });
  });

  it('reports queue depth, messages waiting for a retry, live consumers and dead letters', async () => {
    const b = await makeTestBroker(kind, db, { retryDelaysMs: [60_000] });
    const q = uniqueName('q');
    await b.declareQueues([{ name: q }]);
    await b.send(q, [msg('fail'), msg('fail'), msg('hold'), msg('hold'), msg('hold')]);
    await expectStats(b, q, { queue: q, depth: 5, retrying: 0, consumers: 0, deadLetters: 0 });
    expect((await b.stats()).map((s) => s.queue)).toContain(q);

    const release: Array<() => void> = [];
    const c = await consume(b, q, async (m) => {
      if (m.body.toString() === 'fail') throw new Error('not now');
      await new Promise<void>((r) => release.push(r));
    }, 5);
    // Held handlers are in flight (depth), failed ones wait a minute for their retry (retrying).
    await expectStats(b, q, { depth: 3, retrying: 2, consumers: 1 });
    release.forEach((r) => r());
    await expectStats(b, q, { depth: 0, retrying: 2, consumers: 1 });
    await c.stop();
    await expectStats(b, q, { depth: 0, retrying: 2, consumers: 0 });
  });

  it('survives handlers that throw synchronously or reject with a non-Error', async () => {
    const b = await makeTestBroker(kind, db, { retryDelaysMs: [20] });
    const q = uniqueName('q');
    await b.declareQueues([{ name: q }]);
    const escaped: unknown[] = [];
    const onEscape = (e: unknown) => escaped.push(e);
    process.on('unhandledRejection', onEscape);
    try {
      const good: string[] = [];
      const handler = ((m: Delivery) => {
        const what = m.body.toString();
        if (what === 'sync') throw new Error('thrown synchronously');
        if (what === 'string') return Promise.reject('a plain string');
        if (what === 'undefined') return Promise.reject(undefined);
        good.push(m.messageId);
        return Promise.resolve();
      }) as Handler;
      await consume(b, q, handler);
      const bad = [msg('sync'), msg('string'), msg('undefined')];
      await b.send(q, [...bad, msg('ok')]);
      const dead = await waitFor(async () => {
        const items = (await listDeadLetters(db, { queue: q, limit: 10 })).items;
        return items.length === 3 ? items : undefined;
      }, 'three dead letters');
      const errorOf = (i: number) => dead.find((d) => d.messageId === bad[i].messageId)?.error;
      expect(errorOf(0)).toContain('thrown synchronously');
      expect(errorOf(1)).toContain('a plain string');
      expect(errorOf(2)).toContain('undefined');
      expect(dead.every((d) => d.attempts === 2)).toBe(true);
      // The consumer is still alive and well.
      const after = msg('ok');
      await b.send(q, [after]);
      await waitFor(() => good.includes(after.messageId), 'a good message after the bad ones');
      expect(good).toHaveLength(2);
      expect(escaped).toEqual([]);
    } finally {
      process.off('unhandledRejection', onEscape);
    }
  });
});

/** A database handle that can "die" like its process: every call fails after kill(). */
function killable(db: Database): { db: Database; kill(): void } {
  let dead = false;
  const alive = () => {
    if (dead) throw new Error('this process is gone');
  };
  const wrapped: Database = {
    kind: db.kind,
    query: async (sql, params) => (alive(), db.query(sql, params)),
    exec: async (sql) => (alive(), db.exec(sql)),
    transaction: async (fn, setup) => (alive(), db.transaction(fn, setup)),
    listen: (channel, cb) => db.listen(channel, (p) => void (dead || cb(p))),
    ping: async (ms) => (alive(), db.ping(ms)),
    close: async () => {},
  };
  return { db: wrapped, kill: () => void (dead = true) };
}
