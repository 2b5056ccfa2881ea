import { describe, expect, it } from 'vitest';
import { parseDuration } from '../../src/config.ts';
import { nextAttemptDelay, parseRetryAfter, totalAttempts } from '../../src/webhooks/retry-schedule.ts';

// The contract's default WEBHOOK_RETRY_SCHEDULE.
const scheduleMs = '5s,5m,30m,2h,5h,10h,10h'.split(',').map((d) => parseDuration(d) as number);
const mid = () => 0.5; // no jitter either way
const S = 1000;
const H = 3_600_000;

describe('nextAttemptDelay', () => {
  it('walks the schedule: entry i is the delay after failed attempt i + 1', () => {
    const delays = [1, 2, 3, 4, 5, 6, 7].map((attempt) => nextAttemptDelay({ attempt, scheduleMs, random: mid }));
    expect(delays).toEqual(scheduleMs);
  });

  it('has no attempt left after entries + 1 attempts', () => {
    expect(totalAttempts(scheduleMs)).toBe(8);
    expect(nextAttemptDelay({ attempt: 8, scheduleMs, random: mid })).toBeUndefined();
    expect(nextAttemptDelay({ attempt: 9, scheduleMs, random: mid })).toBeUndefined();
  });

  it('keeps jitter within ±20% and uses both sides', () => {
    let seed = 1;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647);
    const delays = Array.from({ length: 500 }, () => nextAttemptDelay({ attempt: 2, scheduleMs, random }) as number);
    expect(Math.min(...delays)).toBeGreaterThanOrEqual(0.8 * 300 * S);
    expect(Math.max(...delays)).toBeLessThanOrEqual(1.2 * 300 * S);
    expect(Math.min(...delays)).toBeLessThan(0.85 * 300 * S);
    expect(Math.max(...delays)).toBeGreaterThan(1.15 * 300 * S);
    expect(nextAttemptDelay({ attempt: 1, scheduleMs, random: () => 0 })).toBe(4 * S);
    expect(nextAttemptDelay({ attempt: 1, scheduleMs, jitter: 0, random: () => 0 })).toBe(5 * S);
  });

  it('honours a subscription max_attempts below and above the schedule', () => {
    expect(nextAttemptDelay({ attempt: 2, scheduleMs, maxAttempts: 3, random: mid })).toBe(300 * S);
    expect(nextAttemptDelay({ attempt: 3, scheduleMs, maxAttempts: 3, random: mid })).toBeUndefined();
    // more patience than the schedule: the last step repeats
    expect(nextAttemptDelay({ attempt: 9, scheduleMs, maxAttempts: 10, random: mid })).toBe(10 * H);
    expect(nextAttemptDelay({ attempt: 10, scheduleMs, maxAttempts: 10, random: mid })).toBeUndefined();
    expect(nextAttemptDelay({ attempt: 1, scheduleMs, maxAttempts: 1, random: mid })).toBeUndefined();
  });

  it('waits for a Retry-After longer than the step', () => {
    expect(nextAttemptDelay({ attempt: 1, scheduleMs, retryAfterMs: 120 * S, random: () => 0 })).toBe(120 * S);
    expect(nextAttemptDelay({ attempt: 3, scheduleMs, retryAfterMs: 50 * 60 * S, random: () => 0 })).toBe(50 * 60 * S);
  });

  it('never comes back sooner than the schedule because of a shorter Retry-After', () => {
    for (const random of [() => 0, mid, () => 0.999]) {
      for (let attempt = 1; attempt <= 7; attempt++) {
        const without = nextAttemptDelay({ attempt, scheduleMs, random }) as number;
        for (const retryAfterMs of [0, S, 3 * S]) {
          expect(nextAttemptDelay({ attempt, scheduleMs, retryAfterMs, random })).toBe(without);
        }
      }
    }
    expect(nextAttemptDelay({ attempt: 3, scheduleMs, retryAfterMs: 60 * S, random: mid })).toBe(30 * 60 * S);
  });

  it("a receiver answering every attempt '429 Retry-After: 1' still gets the schedule's ~27 h, not 8 attempts in seconds", () => {
    let total = 0;
    for (let attempt = 1; ; attempt++) {
      const delay = nextAttemptDelay({ attempt, scheduleMs, retryAfterMs: S, random: () => 0 });
      if (delay === undefined) break;
      total += delay;
    }
    const schedule = scheduleMs.reduce((a, b) => a + b, 0);
    expect(schedule).toBeGreaterThan(27 * H);
    expect(total).toBeCloseTo(0.8 * schedule, -1); // the schedule at its earliest jitter, Retry-After or not
  });

  it('clamps Retry-After to at least 1 s', () => {
    expect(nextAttemptDelay({ attempt: 1, scheduleMs: [100], retryAfterMs: 0, random: () => 0 })).toBe(S);
  });

  it('caps Retry-After at 1 h, or at the step when the step is longer', () => {
    const day = 24 * H;
    expect(nextAttemptDelay({ attempt: 1, scheduleMs, retryAfterMs: day, random: () => 0 })).toBe(H);
    expect(nextAttemptDelay({ attempt: 6, scheduleMs, retryAfterMs: day, random: () => 0 })).toBe(10 * H);
    expect(nextAttemptDelay({ attempt: 1, scheduleMs, retryAfterMs: day, maxRetryAfterMs: 2 * H, random: () => 0 })).toBe(2 * H);
  });

  it('only ever adds jitter to Retry-After, never comes back early', () => {
    expect(nextAttemptDelay({ attempt: 1, scheduleMs, retryAfterMs: 100 * S, random: () => 0.999 })).toBe(Math.round(100 * S * 1.1998));
    expect(nextAttemptDelay({ attempt: 1, scheduleMs, retryAfterMs: 100 * S, random: () => 0 })).toBe(100 * S);
  });

  it('does not grant an extra attempt because of Retry-After', () => {
    expect(nextAttemptDelay({ attempt: 8, scheduleMs, retryAfterMs: 10 * S, random: mid })).toBeUndefined();
  });

  it('rejects nonsense input', () => {
    expect(() => nextAttemptDelay({ attempt: 0, scheduleMs })).toThrow(RangeError);
    expect(() => nextAttemptDelay({ attempt: 1.5, scheduleMs })).toThrow(RangeError);
    expect(() => nextAttemptDelay({ attempt: 1, scheduleMs, jitter: 1.5 })).toThrow(RangeError);
    expect(() => nextAttemptDelay({ attempt: 1, scheduleMs, maxAttempts: 0 })).toThrow(RangeError);
  });

  it('allows a single attempt with an empty schedule', () => {
    expect(nextAttemptDelay({ attempt: 1, scheduleMs: [] })).toBeUndefined();
  });
});

describe('parseRetryAfter', () => {
  const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');

  it('reads delta-seconds', () => {
    expect(parseRetryAfter('120', now)).toBe(120 * S);
    expect(parseRetryAfter(' 0 ', now)).toBe(0);
    expect(parseRetryAfter(['30', '60'], now)).toBe(30 * S);
  });

  it('reads an HTTP-date relative to now, and a past date as 0', () => {
    expect(parseRetryAfter('Wed, 21 Oct 2015 07:28:30 GMT', now)).toBe(30 * S);
    expect(parseRetryAfter('Wed, 21 Oct 2015 07:00:00 GMT', now)).toBe(0);
  });

  it.each([undefined, null, '', '  ', '-5', '1.5', '2015-10-21', 'soon', '12abc'])('ignores %j', (value) => {
    expect(parseRetryAfter(value as string | undefined, now)).toBeUndefined();
  });
});
