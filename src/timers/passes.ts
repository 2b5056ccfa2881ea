// What the timer loops share besides their pause (stoppable-sleep.ts): passes that never overlap,
// and a pass that deletes or ends rows chunk after chunk.

/**
 * Runs `pass` one call at a time: a call made while one is in progress starts after it (a test's
 * call and the loop's share the line). `idle()` resolves once no pass is running.
 */
export function oneAtATime<T>(pass: () => Promise<T>): { run(): Promise<T>; idle(): Promise<unknown> } {
  let chain: Promise<unknown> = Promise.resolve();
  return {
    run() {
      const run = chain.then(pass);
      chain = run.catch(() => {});
      return run;
    },
    idle: () => chain,
  };
}

/** Calls `step(limit)` until it handles fewer than `limit` rows (or `stopped()`); the total. */
export async function drainChunks(step: (limit: number) => Promise<number>, limit: number, stopped: () => boolean): Promise<number> {
  let total = 0;
  for (;;) {
    const n = await step(limit);
    total += n;
    if (n < limit || stopped()) return total;
  }
}
