// Per-endpoint circuit breaker: an endpoint that keeps failing stops taking worker slots (each
// attempt could hold one for the whole timeout) while its deliveries wait. Pure and clock-injected;
// state lives in this process — each worker learns about a dead endpoint on its own, which costs
// at most `failureThreshold` attempts per worker.
//
//   closed ──N consecutive failures──▶ open ──cool-down over──▶ half_open (one probe)
//      ▲                                 ▲                           │
//      └────────── probe succeeds ───────┼───────────────────────────┤
//                                        └──── probe fails (cool-down ×2, capped) ─┘

export const CircuitState = { closed: 'closed', open: 'open', half_open: 'half_open' } as const;
export type CircuitState = (typeof CircuitState)[keyof typeof CircuitState];

export type CircuitBreakerOptions = {
  /** Consecutive failures that open a closed circuit. */
  failureThreshold?: number;
  /** Cool-down after the first opening; doubles on each re-opening without a success in between. */
  cooldownMs?: number;
  maxCooldownMs?: number;
  /**
   * A probe whose result is never reported (its worker died) would hold the half-open circuit
   * shut for good; after this long another probe is allowed.
   */
  probeTimeoutMs?: number;
  /** Every state change, e.g. to set `webhook_circuit_open{subscription}`. */
  onChange?: (key: string, state: CircuitState, previous: CircuitState) => void;
};

export type CircuitSnapshot = {
  state: CircuitState;
  consecutiveFailures: number;
  /** While open: when a probe becomes possible (ms since epoch). */
  openUntil?: number;
  /** While half-open: when the probe out counts as lost and another may go (ms since epoch). */
  probeExpiresAt?: number;
};

export type CircuitBreaker = {
  /** May an attempt go out now? In half_open, true exactly once per probe: the caller must report it. */
  /**
   * `attemptTimeoutMs`: how long this endpoint's attempts may take; a half-open probe is given up as
   * lost only after the longer of that and the breaker's probe timeout (a probe to an endpoint
   * allowed 300 s is not lost at 60 s, and another is not sent beside it).
   */
  canAttempt(key: string, now: number, attemptTimeoutMs?: number): boolean;
  recordSuccess(key: string, now: number): void;
  /**
   * `startedAt`: when the failed attempt went out. One that went out before the half-open probe is
   * a late report, not the probe's answer: it leaves the probe's circuit as it is.
   */
  recordFailure(key: string, now: number, startedAt?: number): void;
  /**
   * The endpoint answered, but with neither a success nor a failure (a 429: up, and told us when to
   * come back). While closed or open this changes nothing, forgives no failure; a half-open
   * circuit's probe that gets it has proved the endpoint alive, and the circuit closes. Left
   * unreported, that probe would hold the circuit half-open for good.
   */
  recordAnswer(key: string, now: number): void;
  state(key: string): CircuitSnapshot;
  /** Forget a key (subscription deleted or re-enabled by hand). */
  reset(key: string): void;
};

type Entry = {
  state: CircuitState;
  failures: number;
  /** Openings since the last success; sets the cool-down. */
  opens: number;
  openUntil: number;
  /** When the probe out is taken as lost. */
  probeLostAt: number;
  /** When the probe out went (half-open). */
  probeSentAt: number;
};

export const DEFAULT_CIRCUIT_OPTIONS = {
  failureThreshold: 5,
  cooldownMs: 30_000,
  maxCooldownMs: 600_000,
  probeTimeoutMs: 60_000,
} as const;

export function makeCircuitBreaker(options: CircuitBreakerOptions = {}): CircuitBreaker {
  const { failureThreshold, cooldownMs, maxCooldownMs, probeTimeoutMs } = { ...DEFAULT_CIRCUIT_OPTIONS, ...options };
  if (!Number.isInteger(failureThreshold) || failureThreshold < 1) {
    throw new RangeError(`failureThreshold must be an integer >= 1, got ${failureThreshold}`);
  }
  // Only keys that are not plain "closed, no failures" are stored, so the map stays as small as
  // the set of currently troubled endpoints.
  const entries = new Map<string, Entry>();

  const move = (key: string, entry: Entry, next: CircuitState) => {
    const previous = entry.state;
    entry.state = next;
    if (previous !== next) options.onChange?.(key, next, previous);
  };

  const open = (key: string, entry: Entry, now: number) => {
    entry.opens += 1;
    entry.openUntil = now + Math.min(cooldownMs * 2 ** (entry.opens - 1), maxCooldownMs);
    move(key, entry, 'open');
  };

  /** Back to closed, with nothing counted (only troubled keys are stored). */
  const close = (key: string) => {
    const entry = entries.get(key);
    if (!entry) return;
    entries.delete(key);
    move(key, entry, 'closed');
  };

  return {
    canAttempt(key, now, attemptTimeoutMs = 0) {
      const entry = entries.get(key);
      if (!entry || entry.state === 'closed') return true;
      const probe = () => {
        entry.probeSentAt = now;
        entry.probeLostAt = now + Math.max(probeTimeoutMs, attemptTimeoutMs);
      };
      if (entry.state === 'open') {
        if (now < entry.openUntil) return false;
        probe();
        move(key, entry, 'half_open');
        return true;
      }
      // half_open: a probe is out; allow another only if that one looks lost.
      if (now < entry.probeLostAt) return false;
      probe();
      return true;
    },

    // Any success proves the endpoint alive — also a slow attempt that started before opening.
    recordSuccess: (key) => close(key),

    recordAnswer(key) {
      if (entries.get(key)?.state === 'half_open') close(key);
    },

    recordFailure(key, now, startedAt) {
      let entry = entries.get(key);
      if (!entry) {
        entry = { state: 'closed', failures: 0, opens: 0, openUntil: 0, probeLostAt: 0, probeSentAt: 0 };
        entries.set(key, entry);
      }
      // Half-open, an attempt that went out before the probe reports late: the probe has not
      // answered, and the cool-down must not double for it.
      if (entry.state === 'half_open' && startedAt !== undefined && startedAt < entry.probeSentAt) return;
      entry.failures += 1;
      if (entry.state === 'half_open') open(key, entry, now);
      else if (entry.state === 'closed' && entry.failures >= failureThreshold) open(key, entry, now);
      // Already open: attempts that started before the opening report late; they must not
      // stretch the cool-down.
    },

    state(key) {
      const entry = entries.get(key);
      if (!entry) return { state: 'closed', consecutiveFailures: 0 };
      return {
        state: entry.state,
        consecutiveFailures: entry.failures,
        ...(entry.state === 'open' && { openUntil: entry.openUntil }),
        ...(entry.state === 'half_open' && { probeExpiresAt: entry.probeLostAt }),
      };
    },

    reset: (key) => close(key),
  };
}
