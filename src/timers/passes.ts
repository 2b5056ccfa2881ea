// What the timer loops share besides their pause (stoppable-sleep.ts): passes that never overlap,
// and a pass that deletes or ends rows chunk after chunk.

/**
 * Runs `pass` one call at a time. A call made while a pass is running resolves with the pass that
 * starts after that one — the running pass may have read before the caller's change — and every
 * call made meanwhile shares it. (A test's call and the loop's share the line.) `idle()` resolves
 * once no pass is running or queued.
 */
export function oneAtATime<T>(pass: () => Promise<T>): { run(): Promise<T>; idle(): Promise<void> } {
  let current: Promise<T> | undefined;
  let next: Promise<T> | undefined;
  const start = (): Promise<T> => {
    const p = pass();
    current = p;
    const done = () => {
      if (current === p) current = undefined;
    };
    p.then(done, done);
    return p;
  };
  return {
    run() {
      if (!current) return start();
      next ??= current.then(noop, noop).then(() => {
        next = undefined;
        // A call between that pass's end and now may have started one: it is recent enough.
        return current ?? start();
      });
      return next;
    },
    async idle() {
      while (current || next) await Promise.allSettled([current, next]);
    },
  };
}

const noop = () => {};

/** Calls `step(limit)` until it handles fewer than `limit` rows (or `stopped()`); the total. */
export async function drainChunks(step: (limit: number) => Promise<number>, limit: number, stopped: () => boolean): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await step(limit);
    total += n;
    if (n < limit || stopped()) return total;
  }
}
