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
