import { describe, expect, it } from 'vitest';
import { endpointCaps, makeEndpointLimits } from '../../src/webhooks/endpoint-limits.ts';

describe('per-endpoint limits', () => {
  it('leaves at least half of the workers to other endpoints: a quarter in flight, a quarter waiting', () => {
    expect(endpointCaps(64)).toEqual({ maxInFlight: 16, maxWaiting: 16 });
    expect(endpointCaps(3)).toEqual({ maxInFlight: 1, maxWaiting: 1 });
    for (const c of [4, 10, 64, 200]) {
      const { maxInFlight, maxWaiting } = endpointCaps(c);
      expect(maxInFlight + maxWaiting).toBeLessThanOrEqual(c / 2);
    }
  });

  it('lets only maxWaiting deliveries wait for a slot; the next is refused at once', async () => {
    const limits = makeEndpointLimits({ maxInFlight: 1, maxWaiting: 2 });
    const first = limits.tryAcquire('a')!;
    expect(limits.tryAcquire('a')).toBeUndefined();
    const w1 = limits.waitFor('a', 60_000);
    const w2 = limits.waitFor('a', 60_000);
    expect(await limits.waitFor('a', 60_000)).toBeUndefined(); // the line is full
    // Another endpoint is not affected.
    expect(limits.tryAcquire('b')).toBeDefined();
    first.release();
    const s1 = await w1; // the freed slot goes to the first in line
    expect(s1).toBeDefined();
    expect(limits.inFlight('a')).toBe(1);
    s1!.release();
    expect(await w2).toBeDefined();
  });

  it('after detach, the old slots neither count nor free new ones, and a waiter gets a slot at once', async () => {
    const limits = makeEndpointLimits({ maxInFlight: 1, maxWaiting: 2 });
    const old = limits.tryAcquire('a')!;
    old.start(1_000);
    const waiter = limits.waitFor('a', 60_000);
    limits.detach('a');
    const fresh = await waiter; // the old slot no longer counts: the waiter is let in
    expect(fresh).toBeDefined();
    expect(limits.inFlight('a')).toBe(1);
    expect(limits.oldestAge('a', 5_000)).toBe(0); // the old attempt's age is not the new endpoint's
    expect(limits.tryAcquire('a')).toBeUndefined(); // at the cap with the new slot
    const next = limits.waitFor('a', 60_000);
    old.release(); // the old attempt ends: it frees nothing of today's
    expect(limits.inFlight('a')).toBe(1);
    fresh!.release();
    expect(await next).toBeDefined();
    expect(limits.inFlight('a')).toBe(1);
  });

  it("ages an endpoint by its started requests only: time a slot spends before its request is not the endpoint's", () => {
    const limits = makeEndpointLimits({ maxInFlight: 2 });
    const admitted = limits.tryAcquire('a')!; // waiting for a request slot, say
    expect(limits.oldestAge('a', 5_000)).toBe(0);
    const sending = limits.tryAcquire('a')!;
    sending.start(1_000);
    expect(limits.oldestAge('a', 5_000)).toBe(4_000);
    admitted.start(4_500);
    sending.release();
    expect(limits.oldestAge('a', 5_000)).toBe(500);
  });

  it('gives up waiting after the time asked for', async () => {
    const limits = makeEndpointLimits({ maxInFlight: 1, maxWaiting: 4 });
    limits.tryAcquire('a');
    expect(await limits.waitFor('a', 5)).toBeUndefined();
  });
});
