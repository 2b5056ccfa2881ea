// The retry schedule is data (WEBHOOK_RETRY_SCHEDULE): entry i is the delay after failed attempt
// i + 1, so a schedule of n entries allows n + 1 attempts. Pure; randomness is injected.

/** Retry-After below this is treated as this: "retry in 0 s" from a struggling receiver is a loop. */
export const MIN_RETRY_AFTER_MS = 1_000;
/** Default ceiling for Retry-After (see `nextAttemptDelay`). */
export const DEFAULT_MAX_RETRY_AFTER_MS = 3_600_000;
export const DEFAULT_JITTER = 0.2;

export type NextAttemptInput = {
  /** Attempts made so far, the failed one included (1 after the first failure). */
  attempt: number;
  scheduleMs: readonly number[];
  /**
   * The subscription's `max_attempts`, when it sets one. Fewer than the schedule allows cuts it
   * short; more repeats the last step (a subscriber asking for more patience gets it at the
   * slowest pace we already use).
   */
  maxAttempts?: number;
  /** Fraction of the delay added or removed at random; spreads retries of a burst apart. */
  jitter?: number;
  random?: () => number;
  /** From the receiver's Retry-After on 429/503 (see `parseRetryAfter`). */
  retryAfterMs?: number;
  maxRetryAfterMs?: number;
};

/**
 * Milliseconds to wait before the next attempt, or undefined when no attempt is left (the delivery
 * is dead).
 *
 * Without Retry-After: the schedule step ± `jitter` (default ±20%).
 *
 * With Retry-After (429/503) the next attempt waits the longer of the receiver's word and the
 * schedule: Retry-After can only delay an attempt, never hasten it. A receiver answering a burst
 * with `429 Retry-After: 1` would otherwise spend a delivery's attempts in seconds where the
 * schedule promises hours. Retry-After is clamped to at least 1 s and at most
 * max(`maxRetryAfterMs` (default 1 h), the step we would have waited anyway): a buggy or hostile
 * header cannot park a delivery for days, and the cap never pulls a long step (5 h, 10 h) forward
 * to 1 h for a receiver that asked for even longer. Jitter on Retry-After only ever adds
 * (0..+jitter), so we never come back before the time the receiver asked for, while a burst told
 * "60" does not return in lockstep; a longer step keeps its usual ±jitter, but never below the
 * time asked for. Retry-After never grants an extra attempt.
 */
export function nextAttemptDelay(input: NextAttemptInput): number | undefined {
  const { attempt, scheduleMs, jitter = DEFAULT_JITTER, random = Math.random } = input;
  if (!Number.isInteger(attempt) || attempt < 1) {
    throw new RangeError(`attempt counts attempts made so far and must be >= 1, got ${attempt}`);
  }
  if (!(jitter >= 0 && jitter < 1)) throw new RangeError(`jitter must be in [0, 1), got ${jitter}`);
  const maxAttempts = totalAttempts(scheduleMs, input.maxAttempts);
  if (!Number.isInteger(maxAttempts) || maxAttempts < 1) {
    throw new RangeError(`maxAttempts must be an integer >= 1, got ${maxAttempts}`);
  }
  if (attempt >= maxAttempts || scheduleMs.length === 0) return undefined;

  const step = scheduleMs[Math.min(attempt - 1, scheduleMs.length - 1)];
  const r = random();
  const scheduled = Math.max(0, Math.round(step * (1 + jitter * (2 * r - 1))));
  if (input.retryAfterMs !== undefined && Number.isFinite(input.retryAfterMs)) {
    const ceiling = Math.max(input.maxRetryAfterMs ?? DEFAULT_MAX_RETRY_AFTER_MS, step, MIN_RETRY_AFTER_MS);
    const wanted = Math.min(Math.max(input.retryAfterMs, MIN_RETRY_AFTER_MS), ceiling);
    return Math.max(Math.round(wanted * (1 + jitter * r)), scheduled);
  }
  return scheduled;
}

/** How many attempts a delivery gets in total. */
export function totalAttempts(scheduleMs: readonly number[], maxAttempts?: number): number {
  return maxAttempts ?? scheduleMs.length + 1;
}

const DELTA_SECONDS_RE = /^\d+$/;
// HTTP-date always names a weekday or month; requiring a letter keeps Date.parse from reading
// odd numeric strings ("2024", "1.5") as dates.
const HAS_LETTER_RE = /[A-Za-z]/;

/**
 * Retry-After (RFC 9110 §10.2.3) → milliseconds from `now`: delta-seconds ("120") or an HTTP-date
 * ("Wed, 21 Oct 2015 07:28:00 GMT"; a date in the past gives 0). Undefined when absent or not
 * understood — the caller then falls back to the schedule.
 */
export function parseRetryAfter(header: string | readonly string[] | null | undefined, now: number = Date.now()): number | undefined {
  const raw = Array.isArray(header) ? header[0] : header;
  if (typeof raw !== 'string') return undefined;
  const value = raw.trim();
  if (value === '') return undefined;
  if (DELTA_SECONDS_RE.test(value)) {
    const ms = Number(value) * 1000;
    return Number.isFinite(ms) ? ms : undefined;
  }
  if (!HAS_LETTER_RE.test(value)) return undefined;
  const at = Date.parse(value);
  if (Number.isNaN(at)) return undefined;
  return Math.max(0, at - now);
}
