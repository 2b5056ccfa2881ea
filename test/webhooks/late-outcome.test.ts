// An attempt whose outcome is recorded after its lease ran out (a stalled database or event loop):
// the scheduler has taken the delivery back by then. A success still counts when nothing was sent
// since — the receiver has the event, and sending it again would be a duplicate — and never
// overrules an attempt that started after it.
import { beforeAll, describe, expect, it } from 'vitest';
import { claimDeliveries, recordAttempts, type AttemptOutcomeRow } from '../../src/db/webhook-dispatch.sql.ts';
import { api, deliveriesOf, emit, endLease, makeTenant, schedulerPass, startWorld, subscribe, waitForDeliveries, type TestTenant, type World } from './webhook-harness.ts';

const LEASE_MARGIN_MS = 300;
// Nothing listens here: no test sends a request, the attempts are recorded by hand.
const URL_NEVER_CALLED = 'http://127.0.0.1:9/hook';

describe('an attempt recorded after its lease ran out', () => {
  let w: World;
  let a: TestTenant;
  beforeAll(async () => {
    // No dispatcher: the tests play the stalled one.
    w = await startWorld({ worker: { parts: { fanout: true, scheduler: true, dispatcher: false }, leaseMarginMs: LEASE_MARGIN_MS } });
    a = await makeTenant(w);
  }, 120_000);

  /** A delivery claimed for attempt 1 whose lease has run out and which the scheduler took back. */
  async function takenBack(maxAttempts: number) {
    const s = await subscribe(w, a, { url: URL_NEVER_CALLED, timeout_seconds: 1, max_attempts: maxAttempts });
    await emit(w, a.projectId);
    const [row] = await waitForDeliveries(w, s.id, 1, 'pending');
    const [claim] = await claimDeliveries(w.db, [row.id], { defaultTimeoutMs: 1000, leaseMarginMs: LEASE_MARGIN_MS });
    expect(claim).toMatchObject({ status: 'sending', attempts: 1 });
    await endLease(w, row.id);
    await schedulerPass(w);
    return { s, claim };
  }

  const outcome = (deliveryId: string, n: number, next: AttemptOutcomeRow['next'], statusCode: number | null, endpointVersion?: number): AttemptOutcomeRow => ({
    deliveryId, projectId: a.projectId, n, at: new Date(), statusCode, durationMs: 12,
    errorClass: statusCode !== null && statusCode < 300 ? 'success' : 'server_error', error: null, responseExcerpt: null, next, endpointVersion,
  });

  it('marks a delivery taken back as dead on its last attempt succeeded, with the success in its log', async () => {
    const { s, claim } = await takenBack(1);
    expect((await deliveriesOf(w, s.id)).map((d) => d.status)).toEqual(['dead']);

    await recordAttempts(w.db, [outcome(claim.id, 1, { status: 'succeeded' }, 200)]);
    const [d] = await deliveriesOf(w, s.id);
    expect(d).toMatchObject({ status: 'succeeded', attempts: 1, last_status_code: 200, next_attempt_at: null });
    const detail = (await api(w, a, 'GET', `/webhook-deliveries/${d.id}`)).json;
    expect(detail.attempts.map((x: any) => [x.n, x.error_class, x.status_code])).toEqual([[1, 'success', 200]]);
    // Succeeded is final: recover has nothing to send again.
    const recovered = await api(w, a, 'POST', `/webhook-subscriptions/${s.id}/recover`, { since: new Date(Date.now() - 3_600_000).toISOString() });
    expect(recovered.status).toBe(202);
    expect((await deliveriesOf(w, s.id)).map((x) => x.status)).toEqual(['succeeded']);
  });

  it('marks a delivery taken back for a retry succeeded, and the retry is not sent', async () => {
    const { s, claim } = await takenBack(3);
    const [waiting] = await deliveriesOf(w, s.id);
    expect(waiting).toMatchObject({ status: 'retrying', attempts: 1 });

    await recordAttempts(w.db, [outcome(claim.id, 1, { status: 'succeeded' }, 204)]);
    expect(await deliveriesOf(w, s.id)).toMatchObject([{ status: 'succeeded', attempts: 1, next_attempt_at: null }]);
    // The retry's queue message, if the scheduler had sent one, finds nothing to claim.
    expect(await claimDeliveries(w.db, [claim.id], { defaultTimeoutMs: 1000, leaseMarginMs: LEASE_MARGIN_MS })).toEqual([]);
  });

  it('marks a delivery taken back as dead, then retried by hand, succeeded: the manual retry is not sent', async () => {
    const { s, claim } = await takenBack(1);
    expect((await api(w, a, 'POST', `/webhook-deliveries/${claim.id}/retry`)).status).toBe(202);
    expect(await deliveriesOf(w, s.id)).toMatchObject([{ status: 'pending', attempts: 1 }]);

    await recordAttempts(w.db, [outcome(claim.id, 1, { status: 'succeeded' }, 200, claim.endpointVersion)]);
    expect(await deliveriesOf(w, s.id)).toMatchObject([{ status: 'succeeded', attempts: 1, next_attempt_at: null }]);
    // The manual retry's queue message finds nothing to claim: the receiver had it already.
    expect(await claimDeliveries(w.db, [claim.id], { defaultTimeoutMs: 1000, leaseMarginMs: LEASE_MARGIN_MS })).toEqual([]);
  });

  it('leaves a delivery retried by hand after its endpoint changed to the new endpoint: the old one\'s late success settles nothing', async () => {
    const { s, claim } = await takenBack(1);
    expect((await api(w, a, 'PATCH', `/webhook-subscriptions/${s.id}`, { url: 'http://127.0.0.1:9/other-hook' })).status).toBe(200);
    expect((await api(w, a, 'POST', `/webhook-deliveries/${claim.id}/retry`)).status).toBe(202);
    await recordAttempts(w.db, [outcome(claim.id, 1, { status: 'succeeded' }, 200, claim.endpointVersion)]);
    expect(await deliveriesOf(w, s.id)).toMatchObject([{ status: 'pending', attempts: 1 }]);
    // The success is in the attempt log all the same.
    const detail = (await api(w, a, 'GET', `/webhook-deliveries/${claim.id}`)).json;
    expect(detail.attempts.map((x: any) => [x.n, x.error_class, x.status_code])).toEqual([[1, 'success', 200]]);
  });

  it('leaves a delivery to the attempt that started after it, and to a failure nothing', async () => {
    const { s, claim } = await takenBack(3);
    // A late failure changes nothing: the delivery was already due again.
    await recordAttempts(w.db, [outcome(claim.id, 1, { status: 'retrying', at: new Date(Date.now() + 60_000) }, 500)]);
    expect(await deliveriesOf(w, s.id)).toMatchObject([{ status: 'retrying', attempts: 1 }]);

    // A long lease: the world's scheduler must not take attempt 2 back while the test looks.
    const [second] = await claimDeliveries(w.db, [claim.id], { defaultTimeoutMs: 1000, leaseMarginMs: 120_000 });
    expect(second).toMatchObject({ status: 'sending', attempts: 2 });
    // Attempt 1's success, later still: attempt 2 is out and its outcome decides.
    await recordAttempts(w.db, [outcome(claim.id, 1, { status: 'succeeded' }, 200)]);
    expect(await deliveriesOf(w, s.id)).toMatchObject([{ status: 'sending', attempts: 2 }]);
    await recordAttempts(w.db, [outcome(claim.id, 2, { status: 'succeeded' }, 200)]);
    const [d] = await deliveriesOf(w, s.id);
    expect(d).toMatchObject({ status: 'succeeded', attempts: 2 });
    const detail = (await api(w, a, 'GET', `/webhook-deliveries/${d.id}`)).json;
    expect(detail.attempts.map((x: any) => [x.n, x.error_class, x.status_code])).toEqual([[1, 'success', 200], [2, 'success', 200]]);
  });
});
