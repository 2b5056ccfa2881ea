// A dispatcher that dies mid-delivery: the delivery is retried after its lease, never lost, and
// never marked succeeded without a 2xx. Embedded: a claim taken and abandoned in-process (PGlite
// lives in one process). Services: a real dispatcher process, SIGKILLed while its POST is out.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { claimDeliveries } from '../../src/db/webhook-dispatch.sql.ts';
import { onCleanup, onServices, waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { api, deliveriesOf, emit, endLease, makeTenant, schedulerPass, SECRET_KEY, startWorld, subscribe, waitForDeliveries, type TestTenant, type World } from './webhook-harness.ts';

const ROOT = fileURLToPath(new URL('../..', import.meta.url));
const LEASE_MARGIN_MS = 300;

describe('a webhook dispatcher that dies mid-delivery', () => {
  let w: World;
  let a: TestTenant;
  beforeAll(async () => {
    // Fan-out and scheduler run here; each test brings its own (doomed) dispatcher first.
    w = await startWorld({ worker: { parts: { fanout: true, scheduler: true, dispatcher: false }, leaseMarginMs: LEASE_MARGIN_MS } });
    a = await makeTenant(w);
  }, 120_000);

  it('retries a delivery whose claim was abandoned, once the lease has passed', async () => {
    const rx = await startReceiver();
    const s = await subscribe(w, a, { url: rx.url, timeout_seconds: 1 });
    await emit(w, a.projectId);
    const [row] = await waitForDeliveries(w, s.id, 1, 'pending');
    // The doomed dispatcher: it claims (attempt 1 starts) and is never heard from again.
    const [claim] = await claimDeliveries(w.db, [row.id], { defaultTimeoutMs: 1000, leaseMarginMs: LEASE_MARGIN_MS });
    expect(claim).toMatchObject({ status: 'sending', attempts: 1 });
    // The lease's end as the claim wrote it: nothing may send the delivery again before then.
    const lease = await w.db.query<{ locked_until: Date }>('SELECT locked_until FROM webhook_deliveries WHERE id = $1', [row.id]);
    const leaseEnd = lease.rows[0].locked_until;
    await w.startWorker({ parts: { dispatcher: true, fanout: false, scheduler: false }, leaseMarginMs: LEASE_MARGIN_MS });

    const [done] = await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      return rows[0]?.status === 'succeeded' ? rows : undefined;
    }, 'the delivery retried after the lease').catch(async (err) => {
      const state = await w.db.query('SELECT status, attempts, next_attempt_at, locked_until, enqueued_at, now() AS now FROM webhook_deliveries WHERE id = $1', [row.id]);
      const q = await w.broker.stats();
      throw new Error(`${err.message}; row ${JSON.stringify(state.rows)}; queues ${JSON.stringify(q)}; received ${rx.requests.length}`);
    });
    expect(done.attempts).toBe(2);
    expect(rx.requests).toHaveLength(1);
    const detail = (await api(w, a, 'GET', `/webhook-deliveries/${done.id}`)).json;
    expect(detail.attempts.map((x: any) => [x.n, x.error_class, x.status_code])).toEqual([
      [1, 'interrupted', null],
      [2, 'success', 200],
    ]);
    // Held by the lease, not sent again early: the second attempt started once the lease had
    // ended. This is checked from what was recorded, not by reading the status at some moment
    // in between; on a slow machine starting the dispatcher alone can take longer than the lease.
    const second = await w.db.query<{ at: Date }>('SELECT at FROM webhook_attempts WHERE delivery_id = $1 AND n = 2', [row.id]);
    expect(second.rows[0].at.getTime()).toBeGreaterThanOrEqual(leaseEnd.getTime());
  });

  it.runIf(onServices)('retries a delivery whose dispatcher process was killed during the POST, and succeeds only on the 2xx', async () => {
    let killed = false;
    const rx = await startReceiver(() => (killed ? 200 : 'hang'));
    // A long timeout: the child's request must still be hanging when the test looks at it and
    // kills the child, however slow the machine. The lease is forced out after the kill instead.
    const s = await subscribe(w, a, { url: rx.url, timeout_seconds: 60 });
    const child = spawn(process.execPath, ['--import', 'tsx', 'test/webhooks/child-dispatcher.ts'], {
      cwd: ROOT,
      env: { ...process.env, CHILD_DATABASE_URL: w.dbUrl, CHILD_NAMESPACE: w.broker.namespace, CHILD_SECRET_KEY: SECRET_KEY, CHILD_LEASE_MARGIN_MS: String(LEASE_MARGIN_MS) },
      stdio: ['pipe', 'pipe', 'inherit'],
    });
    onCleanup(async () => void child.kill('SIGKILL'));
    let out = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    await waitFor(() => out.includes('ready') || child.exitCode !== null, 'the child dispatcher to start', 30_000);
    expect(child.exitCode).toBeNull();

    const [event] = await emit(w, a.projectId);
    await waitFor(() => rx.hanging() === 1, 'the child to be mid-POST');
    const during = await deliveriesOf(w, s.id);
    expect(during.map((d) => [d.status, d.attempts])).toEqual([['sending', 1]]);
    const exited = new Promise((resolve) => child.once('exit', resolve));
    child.kill('SIGKILL');
    await exited;
    // The hanging request was the child's: its connection closed with the process.
    await waitFor(() => rx.hanging() === 0, 'the killed child\'s request to close');
    killed = true;
    await w.startWorker({ parts: { dispatcher: true, fanout: false, scheduler: false }, leaseMarginMs: LEASE_MARGIN_MS });
    // The child's lease would hold the row for another minute. Waiting out a lease is the first
    // test's subject; here it is ended by hand, and a scheduler pass takes the delivery back.
    await endLease(w, during[0].id); // still sending: the killed child recorded nothing
    await schedulerPass(w);

    const [done] = await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      return rows[0]?.status === 'succeeded' ? rows : undefined;
    }, 'the delivery retried by another dispatcher');
    expect(rx.requests.map((r) => r.headers['webhook-id'])).toEqual([event.id, event.id]);
    const detail = (await api(w, a, 'GET', `/webhook-deliveries/${done.id}`)).json;
    expect(detail.attempts.map((x: any) => [x.n, x.error_class, x.status_code])).toEqual([
      [1, 'interrupted', null],
      [2, 'success', 200],
    ]);
  });
});
