// A dispatcher that dies mid-delivery: the delivery is retried after its lease, never lost, and
// never marked succeeded without a 2xx. Embedded: a claim taken and abandoned in-process (PGlite
// lives in one process). Services: a real dispatcher process, SIGKILLed while its POST is out.
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { beforeAll, describe, expect, it } from 'vitest';
import { claimDeliveries } from '../../src/db/webhook-dispatch.sql.ts';
import { onCleanup, onServices, waitFor } from '../support/env.ts';
import { startReceiver } from './receiver.ts';
import { api, deliveriesOf, emit, makeTenant, SECRET_KEY, startWorld, subscribe, type TestTenant, type World } from './webhook-harness.ts';

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
    const [row] = await waitFor(async () => {
      const rows = await deliveriesOf(w, s.id);
      return rows.length === 1 ? rows : undefined;
    }, 'the delivery row');
    // The doomed dispatcher: it claims (attempt 1 starts) and is never heard from again.
    const [claim] = await claimDeliveries(w.db, [row.id], { defaultTimeoutMs: 1000, leaseMarginMs: LEASE_MARGIN_MS });
    expect(claim).toMatchObject({ status: 'sending', attempts: 1 });
    await w.startWorker({ parts: { dispatcher: true, fanout: false, scheduler: false }, leaseMarginMs: LEASE_MARGIN_MS });
    expect((await deliveriesOf(w, s.id))[0].status).toBe('sending'); // held by the lease, not re-sent early

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
  });

  it.runIf(onServices)('retries a delivery whose dispatcher process was killed during the POST, and succeeds only on the 2xx', async () => {
    let killed = false;
    const rx = await startReceiver(() => (killed ? 200 : 'hang'));
    const s = await subscribe(w, a, { url: rx.url, timeout_seconds: 2 });
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
    killed = true;
    await w.startWorker({ parts: { dispatcher: true, fanout: false, scheduler: false }, leaseMarginMs: LEASE_MARGIN_MS });

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
