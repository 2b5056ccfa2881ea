import { describe, expect, it } from 'vitest';
import { makeCircuitBreaker, type CircuitState } from '../../src/webhooks/circuit-breaker.ts';

const key = 'sub-1';

function setup(options: Parameters<typeof makeCircuitBreaker>[0] = {}) {
  let now = 1_000_000;
  const changes: Array<[string, CircuitState, CircuitState]> = [];
  const breaker = makeCircuitBreaker({ ...options, onChange: (k, state, previous) => changes.push([k, state, previous]) });
  return {
    breaker,
    changes,
    now: () => now,
    advance: (ms: number) => (now += ms),
    fail: (times: number) => {
      for (let i = 0; i < times; i++) breaker.recordFailure(key, now);
    },
  };
}

describe('circuit breaker', () => {
  it('stays closed below the threshold and a success resets the count', () => {
    const t = setup();
    t.fail(4);
    expect(t.breaker.state(key)).toEqual({ state: 'closed', consecutiveFailures: 4 });
    t.breaker.recordSuccess(key, t.now());
    t.fail(4);
    expect(t.breaker.canAttempt(key, t.now())).toBe(true);
    expect(t.changes).toEqual([]);
  });

  it('opens after 5 consecutive failures and refuses attempts for the 30 s cool-down', () => {
    const t = setup();
    t.fail(5);
    expect(t.breaker.state(key)).toEqual({ state: 'open', consecutiveFailures: 5, openUntil: t.now() + 30_000 });
    expect(t.changes).toEqual([[key, 'open', 'closed']]);
    expect(t.breaker.canAttempt(key, t.now())).toBe(false);
    t.advance(29_999);
    expect(t.breaker.canAttempt(key, t.now())).toBe(false);
  });

  it('lets exactly one probe through after the cool-down, and closes when it succeeds', () => {
    const t = setup();
    t.fail(5);
    t.advance(30_000);
    expect(t.breaker.canAttempt(key, t.now())).toBe(true);
    expect(t.breaker.state(key).state).toBe('half_open');
    expect(t.breaker.canAttempt(key, t.now())).toBe(false);
    expect(t.breaker.canAttempt(key, t.now() + 1_000)).toBe(false);
    t.breaker.recordSuccess(key, t.now());
    expect(t.breaker.state(key)).toEqual({ state: 'closed', consecutiveFailures: 0 });
    expect(t.breaker.canAttempt(key, t.now())).toBe(true);
    expect(t.changes.map(([, s]) => s)).toEqual(['open', 'half_open', 'closed']);
  });

  it('re-opens on a failed probe with a cool-down doubling up to 10 minutes', () => {
    const t = setup();
    t.fail(5);
    const cooldowns: number[] = [];
    for (let i = 0; i < 7; i++) {
      const { openUntil } = t.breaker.state(key);
      cooldowns.push((openUntil as number) - t.now());
      t.advance((openUntil as number) - t.now());
      expect(t.breaker.canAttempt(key, t.now())).toBe(true); // the probe
      t.fail(1);
      expect(t.breaker.state(key).state).toBe('open');
    }
    expect(cooldowns).toEqual([30_000, 60_000, 120_000, 240_000, 480_000, 600_000, 600_000]);
  });

  it('starts over at 30 s after a success', () => {
    const t = setup();
    t.fail(5);
    t.advance(30_000);
    t.breaker.canAttempt(key, t.now());
    t.fail(1); // second opening: 60 s
    t.advance(60_000);
    t.breaker.canAttempt(key, t.now());
    t.breaker.recordSuccess(key, t.now());
    t.fail(5);
    expect((t.breaker.state(key).openUntil as number) - t.now()).toBe(30_000);
  });

  it('does not stretch the cool-down when late failures arrive while open', () => {
    const t = setup();
    t.fail(5);
    const { openUntil } = t.breaker.state(key);
    t.advance(10_000);
    t.fail(3);
    expect(t.breaker.state(key).openUntil).toBe(openUntil);
  });

  it('leaves a half-open circuit to its probe when an attempt that went out before the probe fails late', () => {
    const t = setup();
    const before = t.now(); // an attempt with a long timeout goes out
    t.fail(5);
    t.advance(30_000);
    expect(t.breaker.canAttempt(key, t.now())).toBe(true); // the probe
    t.advance(1000);
    t.breaker.recordFailure(key, t.now(), before); // the early attempt times out now
    expect(t.breaker.state(key).state).toBe('half_open'); // before: open again, cool-down doubled to 60 s
    t.breaker.recordFailure(key, t.now(), t.now() - 500); // the probe's own failure re-opens it
    expect(t.breaker.state(key)).toMatchObject({ state: 'open', openUntil: t.now() + 60_000 });
  });

  it('closes when its probe is answered 429, and counts a 429 neither way otherwise', () => {
    const t = setup();
    t.fail(4);
    t.breaker.recordAnswer(key, t.now()); // closed: forgives nothing
    expect(t.breaker.state(key)).toEqual({ state: 'closed', consecutiveFailures: 4 });
    t.fail(1);
    t.breaker.recordAnswer(key, t.now()); // open: no change, and the cool-down stands
    expect(t.breaker.state(key)).toEqual({ state: 'open', consecutiveFailures: 5, openUntil: t.now() + 30_000 });
    t.advance(30_000);
    expect(t.breaker.canAttempt(key, t.now())).toBe(true); // the probe
    t.breaker.recordAnswer(key, t.now());
    expect(t.breaker.state(key)).toEqual({ state: 'closed', consecutiveFailures: 0 });
    expect(t.changes.map(([, state]) => state)).toEqual(['open', 'half_open', 'closed']);
  });

  it('allows a new probe when the previous one never reported back', () => {
    const t = setup({ probeTimeoutMs: 5_000 });
    t.fail(5);
    t.advance(30_000);
    expect(t.breaker.canAttempt(key, t.now())).toBe(true);
    // The snapshot says when the probe counts as lost, so a caller that waits knows until when.
    expect(t.breaker.state(key)).toEqual({ state: 'half_open', consecutiveFailures: 5, probeExpiresAt: t.now() + 5_000 });
    t.advance(4_999);
    expect(t.breaker.canAttempt(key, t.now())).toBe(false);
    t.advance(1);
    expect(t.breaker.canAttempt(key, t.now())).toBe(true);
    expect(t.breaker.state(key).probeExpiresAt).toBe(t.now() + 5_000);
    expect(t.breaker.canAttempt(key, t.now())).toBe(false);
  });

  it("waits for a probe as long as the endpoint's own attempt timeout allows, when that is longer", () => {
    const t = setup(); // probe timeout 60 s
    t.fail(5);
    t.advance(30_000);
    expect(t.breaker.canAttempt(key, t.now(), 305_000)).toBe(true); // a subscription allowed 300 s
    expect(t.breaker.state(key).probeExpiresAt).toBe(t.now() + 305_000);
    t.advance(61_000);
    expect(t.breaker.canAttempt(key, t.now(), 305_000)).toBe(false); // still out: no second probe beside it
    t.advance(244_000);
    expect(t.breaker.canAttempt(key, t.now(), 305_000)).toBe(true);
    // A shorter attempt timeout never shortens the breaker's own.
    t.advance(305_000);
    expect(t.breaker.canAttempt(key, t.now(), 1_000)).toBe(true);
    expect(t.breaker.state(key).probeExpiresAt).toBe(t.now() + 60_000);
  });

  it('keeps keys apart', () => {
    const t = setup({ failureThreshold: 2 });
    t.fail(2);
    expect(t.breaker.canAttempt(key, t.now())).toBe(false);
    expect(t.breaker.canAttempt('sub-2', t.now())).toBe(true);
    expect(t.breaker.state('sub-2').state).toBe('closed');
  });

  it('reset closes the circuit and reports it', () => {
    const t = setup();
    t.fail(5);
    t.breaker.reset(key);
    expect(t.breaker.canAttempt(key, t.now())).toBe(true);
    expect(t.changes.at(-1)).toEqual([key, 'closed', 'open']);
  });

  it('drives a gauge through onChange without knowing about metrics', () => {
    const gauge = new Map<string, number>();
    let now = 0;
    const breaker = makeCircuitBreaker({
      failureThreshold: 1,
      onChange: (subscription, state) => gauge.set(subscription, state === 'closed' ? 0 : 1),
    });
    breaker.recordFailure(key, now);
    expect(gauge.get(key)).toBe(1);
    now += 30_000;
    breaker.canAttempt(key, now);
    expect(gauge.get(key)).toBe(1);
    breaker.recordSuccess(key, now);
    expect(gauge.get(key)).toBe(0);
  });

  it('rejects a threshold below 1', () => {
    expect(() => makeCircuitBreaker({ failureThreshold: 0 })).toThrow(RangeError);
  });
});
