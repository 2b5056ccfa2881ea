// A promise with a deadline: rejects when `p` has not settled within `ms` (the work itself goes
// on; the caller decides what a late result means). The timer is cleared as soon as either wins.

/** `p`, or a rejection after `ms`: an Error with `onTimeout` as its message, or the one it builds. */
export function withDeadline<T>(p: Promise<T>, ms: number, onTimeout: string | (() => Error)): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(typeof onTimeout === 'string' ? new Error(onTimeout) : onTimeout()), ms);
  });
  return Promise.race([p, deadline]).finally(() => clearTimeout(timer));
}

/**
 * A part of a process that runs until stopped: a consumer, the relay, a sweeper. `stop` is given
 * the shutdown's deadline (epoch ms) when there is one: work under way (handlers, attempts) is
 * waited for until then, not for a wait of its own on top of the others'.
 */
export type Component = { name: string; stop(deadline?: number): Promise<void> };

/** Milliseconds left until `deadline`, never below 0; none when there is no deadline. */
export function msUntil(deadline: number | undefined): number | undefined {
  return deadline === undefined ? undefined : Math.max(0, deadline - Date.now());
}
