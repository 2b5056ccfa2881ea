// A processor killed in the middle of 2,000 webhooks: after another one takes over, exactly 2,000
// messages exist and every effect (counters, events) happened once.
// - services: the processor runs in a child process (PostgreSQL + RabbitMQ) and gets SIGKILL.
// - embedded: PGlite is one process's database, so the crash is simulated in-process: the doomed
//   processor stops acking (some of its webhooks committed, some never started) and stops renewing
//   its leases, exactly what a dead process leaves behind; the survivor gets them redelivered.
import { spawn, type ChildProcess } from 'node:child_process';
import { once } from 'node:events';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { makePostgresBroker } from '../../src/broker/postgres-broker.ts';
import { Queues } from '../../src/broker/topology.ts';
import { makeChannelDirectory } from '../../src/inbound/channel-directory.ts';
import { makeInboundHandler, startInboundProcessor } from '../../src/inbound/processor.ts';
import { makeWahaGenerator } from '../../src/inbound/simulate-payloads.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { onCleanup, onServices, waitFor } from '../support/env.ts';
import { count, SECRET_KEY, startInbound, type Channel, type Inbound } from './harness.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');
const TOTAL = 2000;
const KILL_AFTER = 400;

const stored = (t: Inbound, ch: Channel) => count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id]);

/** Posts TOTAL distinct messages, 40 at a time; calls `kill` once KILL_AFTER are stored. */
async function postAll(t: Inbound, ch: Channel, kill: () => Promise<void>) {
  const gen = makeWahaGenerator({ messagesOnly: true, contacts: 40, session: 'crash' });
  let killed = false;
  for (let sent = 0; sent < TOTAL; sent += 40) {
    const rs = await Promise.all(Array.from({ length: Math.min(40, TOTAL - sent) }, () => t.post(ch, gen.next().body)));
    expect(rs.every((r) => r.status === 200)).toBe(true);
    if (!killed && (await stored(t, ch)) >= KILL_AFTER) {
      killed = true;
      await kill();
    }
  }
  if (!killed) {
    await waitFor(async () => (await stored(t, ch)) >= KILL_AFTER, `${KILL_AFTER} stored before the kill`, 60_000);
    await kill();
  }
}

async function expectExactlyOnce(t: Inbound, ch: Channel) {
  await waitFor(async () => (await stored(t, ch)) >= TOTAL, `${TOTAL} messages stored`, 120_000, 100);
  const q = async (sql: string) => (await t.db.query(sql, [t.projectId])).rows[0];
  expect(await stored(t, ch)).toBe(TOTAL);
  expect((await q(`SELECT count(DISTINCT external_key)::int AS n FROM messages WHERE project_id = $1`)).n).toBe(TOTAL);
  expect((await q(`SELECT sum(message_count)::int AS n FROM sessions WHERE project_id = $1`)).n).toBe(TOTAL);
  expect((await q(`SELECT sum(total_messages)::int AS n FROM contacts WHERE project_id = $1`)).n).toBe(TOTAL);
  const events = await q(`SELECT
      count(*) FILTER (WHERE type IN ('message.received', 'message.sent'))::int AS messages,
      count(*) FILTER (WHERE type = 'contact.created')::int AS contacts,
      count(*) FILTER (WHERE type = 'session.started')::int AS sessions
    FROM outbox WHERE project_id = $1`);
  expect(events).toEqual({
    messages: TOTAL,
    contacts: (await q('SELECT count(*)::int AS n FROM contacts WHERE project_id = $1')).n,
    sessions: (await q('SELECT count(*)::int AS n FROM sessions WHERE project_id = $1')).n,
  });
  expect(events.contacts).toBe(40);
  expect(await count(t.db, 'SELECT 1 FROM parse_errors')).toBe(0);
  expect(await count(t.db, 'SELECT 1 FROM dead_letters')).toBe(0);
}

describe('processor killed in the middle of 2,000 webhooks', () => {
  it.runIf(onServices)('stores exactly 2,000 messages after a SIGKILL and a restart (child process)', async () => {
    const t = await startInbound({ role: 'api' });
    const ch = await t.createChannel();
    const children = new Set<ChildProcess>();
    onCleanup(async () => children.forEach((c) => c.kill('SIGKILL')));
    const startChild = async () => {
      const child = spawn(process.execPath, ['--import', 'tsx', 'test/inbound/child-processor.ts'], {
        cwd: ROOT,
        env: { ...process.env, CHILD_DATABASE_URL: t.dbUrl, CHILD_NAMESPACE: t.broker.namespace, SECRET_KEY },
        stdio: ['pipe', 'pipe', 'inherit'],
      });
      children.add(child);
      let out = '';
      child.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      await waitFor(() => out.includes('ready') || child.exitCode !== null, 'child processor ready', 30_000);
      expect(child.exitCode).toBeNull();
      return child;
    };

    const first = await startChild();
    await postAll(t, ch, async () => {
      const exited = once(first, 'exit');
      first.kill('SIGKILL');
      await exited;
    });
    expect(await stored(t, ch)).toBeLessThan(TOTAL); // the kill really happened mid-way
    await startChild();
    await expectExactlyOnce(t, ch);
  }, 180_000);

  it.runIf(!onServices)('stores exactly 2,000 messages after a simulated crash and a takeover (in-process)', async () => {
    const t = await startInbound({ role: 'api' });
    const ch = await t.createChannel();
    const channels = makeChannelDirectory({ db: t.db, secretKey: SECRET_KEY, defaultSessionTimeoutMinutes: 30, logger: silentLogger });
    const real = makeInboundHandler({ db: t.db, broker: t.broker, logger: silentLogger, channels });
    // The doomed processor: its own broker with short leases. Once dead it settles nothing more —
    // handlers already past their commit never ack, new ones never start.
    const doomedBroker = makePostgresBroker({ db: t.db, retryDelaysMs: [100, 300, 1000], pollMs: 50, leaseMs: 1000 });
    let dead = false;
    const hang = () => new Promise<void>(() => {});
    const doomed = await doomedBroker.consume(Queues.inboundRaw, async (d) => {
      if (dead) return hang();
      await real(d);
      if (dead) return hang(); // committed, killed before the ack
    }, { concurrency: 32 });

    await postAll(t, ch, async () => {
      dead = true;
      await doomed.stop(0); // no more claims or lease renewals
    });
    expect(await stored(t, ch)).toBeLessThan(TOTAL);
    const survivor = await startInboundProcessor({ db: t.db, broker: t.broker, logger: silentLogger, channels });
    onCleanup(() => survivor.stop());
    await expectExactlyOnce(t, ch);
  }, 180_000);
});
