// Per-subscription limits inside one dispatcher process, so one endpoint cannot take all the
// workers (the dispatcher keeps the same kind per project, over all its endpoints): a cap on attempts in flight (an endpoint that hangs until the timeout holds at most
// `maxInFlight` slots) and the subscription's optional rate limit. Pure: times are passed in.
//
// A delivery that finds its endpoint at the cap may wait here for a slot, briefly and behind at
// most `maxWaiting` others: a fast endpoint that is merely busy frees a slot within milliseconds,
// and waiting in memory costs far less than a trip through the database and the queue. Whether
// the endpoint is fast or stuck is read from the age of its oldest attempt in flight.
//
// The rate limit hands out send slots 1/rate apart (a virtual schedule, GCRA-style): a delivery
// that gets a slot in the future is postponed to exactly that slot and keeps it — when it comes
// back it goes, instead of queueing for a new slot behind everyone who asked meanwhile — so a
// backlog spreads out evenly and each delivery is postponed once. It is per process: N
// dispatcher processes together send up to N × rate.

import type { Slot } from './request-slots.ts';

/** An endpoint's slot: held from admission, but its age counts from the request's start. */
export type EndpointSlot = Slot & {
  /**
   * The attempt's request starts now. Until then the slot does not count towards the endpoint's
   * oldest attempt: time spent waiting for a request slot, the claim or a rate slot is not the
   * endpoint being slow.
   */
  start(now: number): void;
};

export type EndpointLimits = {
  /** A slot if the subscription is under its cap. */
  tryAcquire(subscriptionId: string): EndpointSlot | undefined;
  /** A slot regardless of the cap (for work already claimed). */
  force(subscriptionId: string): EndpointSlot;
  /** Waits up to `ms` for a slot, behind at most `maxWaiting` others; undefined if none came. */
  waitFor(subscriptionId: string, ms: number): Promise<EndpointSlot | undefined>;
  /** How long the subscription's oldest started attempt in flight has been running (0 if none). */
  oldestAge(subscriptionId: string, now: number): number;
  inFlight(subscriptionId: string): number;
  /**
   * The subscription's endpoint changed (another URL): the attempts in flight to the old one stop
   * counting towards its cap (their slots, released later, free nothing), and waiters get the
   * slots that are free now.
   */
  detach(subscriptionId: string): void;
  /**
   * When delivery `key` may go out under `perSecond`: `now` or later. A slot more than `holdMs`
   * away is held for the delivery until it comes back; a nearer one is used at once.
   */
  rateSlot(subscriptionId: string, key: string, perSecond: number | null, now: number, holdMs: number): number;
};

/** How far ahead rate slots are handed out before we stop reserving and just say "later". */
const MAX_AHEAD_MS = 60_000;

type Waiter = (slot: EndpointSlot | undefined) => void;

export function makeEndpointLimits(opts: { maxInFlight: number; maxWaiting?: number }): EndpointLimits {
  const maxWaiting = opts.maxWaiting ?? opts.maxInFlight;
  // The slots held, per subscription, with their request's start time once it has started.
  const running = new Map<string, Set<{ at: number | undefined }>>();
  const waiting = new Map<string, Waiter[]>();
  const nextSlot = new Map<string, number>();
  const held = new Map<string, number>();

  function take(id: string): EndpointSlot {
    let set = running.get(id);
    if (!set) running.set(id, (set = new Set()));
    const entry: { at: number | undefined } = { at: undefined };
    set.add(entry);
    let released = false;
    return {
      start(now) {
        entry.at = now;
      },
      release() {
        if (released) return;
        released = true;
        set.delete(entry);
        // A slot of a detached endpoint frees nothing of today's.
        if (running.get(id) !== set) return;
        if (set.size === 0) running.delete(id);
        // Hand the freed slot straight to the first waiter, so nobody overtakes it.
        const line = waiting.get(id);
        const next = line?.shift();
        if (line && line.length === 0) waiting.delete(id);
        next?.(take(id));
      },
    };
  }

  const count = (id: string) => running.get(id)?.size ?? 0;

  return {
    tryAcquire: (id) => (count(id) < opts.maxInFlight ? take(id) : undefined),
    force: (id) => take(id),
    waitFor(id, ms) {
      if (count(id) < opts.maxInFlight) return Promise.resolve(take(id));
      const line = waiting.get(id) ?? [];
      if (line.length >= maxWaiting) return Promise.resolve(undefined);
      waiting.set(id, line);
      return new Promise((resolve) => {
        const timer = setTimeout(() => {
          const i = line.indexOf(waiter);
          if (i >= 0) line.splice(i, 1);
          if (line.length === 0 && waiting.get(id) === line) waiting.delete(id);
          resolve(undefined);
        }, ms);
        const waiter: Waiter = (slot) => {
          clearTimeout(timer);
          resolve(slot);
        };
        line.push(waiter);
      });
    },
    oldestAge(id, now) {
      let oldest = now;
      for (const e of running.get(id) ?? []) if (e.at !== undefined) oldest = Math.min(oldest, e.at);
      return now - oldest;
    },
    inFlight: count,
    detach(id) {
      running.delete(id);
      const line = waiting.get(id);
      while (line && line.length > 0 && count(id) < opts.maxInFlight) line.shift()!(take(id));
      if (line && line.length === 0 && waiting.get(id) === line) waiting.delete(id);
    },
    rateSlot(id, key, perSecond, now, holdMs) {
      if (!perSecond || perSecond <= 0) return now;
      let slot = held.get(key);
      held.delete(key);
      if (slot === undefined) {
        slot = Math.max(now, nextSlot.get(id) ?? 0);
        // Far enough out already: do not push the schedule further for it.
        if (slot - now <= MAX_AHEAD_MS) nextSlot.set(id, slot + 1000 / perSecond);
      }
      if (slot - now > holdMs) held.set(key, slot);
      // Forget idle subscriptions and reservations nobody came back for (another process took
      // the delivery), so the maps hold only what is current.
      if (nextSlot.size > 10_000) for (const [k, t] of nextSlot) if (t < now) nextSlot.delete(k);
      if (held.size > 100_000) for (const [k, t] of held) if (t < now - MAX_AHEAD_MS) held.delete(k);
      return slot;
    },
  };
}

/**
 * Per-subscription limits for a dispatcher of `concurrency` workers: a quarter of them in flight
 * (what a hanging endpoint can hold until its timeout), and another quarter waiting for a slot —
 * they hold no connection and a fast endpoint serves them in moments. One endpoint therefore
 * occupies at most half of the workers (from four workers up; with fewer, one of each); the other
 * half always serves the other endpoints, even in
 * the second before a hanging endpoint is recognised as slow (while every worker could wait for
 * it, a newly stuck endpoint stalled all deliveries for that second). Waiting is only allowed
 * while the endpoint is fast (see the dispatcher).
 */
export function endpointCaps(concurrency: number): { maxInFlight: number; maxWaiting: number } {
  const quarter = Math.max(1, Math.floor(concurrency / 4));
  return { maxInFlight: quarter, maxWaiting: quarter };
}

/**
 * The same limits per project, over all its endpoints, for a dispatcher of `concurrency` workers:
 * half of them in flight (from two workers up), a quarter waiting. Each endpoint alone holds at
 * most a quarter, so without this a project with four endpoints that hang would hold them all
 * until their circuits open, and every other project's deliveries would wait.
 */
export function projectCaps(concurrency: number): { maxInFlight: number; maxWaiting: number } {
  return { maxInFlight: Math.max(1, Math.floor(concurrency / 2)), maxWaiting: endpointCaps(concurrency).maxWaiting };
}

/** One slot made of two (an endpoint's and its project's): started and released together. */
export function bothSlots(a: EndpointSlot, b: EndpointSlot): EndpointSlot {
  return {
    start(now) {
      a.start(now);
      b.start(now);
    },
    release() {
      a.release();
      b.release();
    },
  };
}
