// The pause of a timer loop: sleeps between passes, and stop() cuts the current sleep short and
// makes every later one return at once, so a loop ends promptly on shutdown.
export type StoppableSleep = {
  sleep(ms: number): Promise<void>;
  stop(): void;
  readonly stopped: boolean;
};

export function makeStoppableSleep(): StoppableSleep {
  let stopped = false;
  let timer: NodeJS.Timeout | undefined;
  let wake: (() => void) | undefined;
  return {
    sleep: (ms) =>
      new Promise<void>((resolve) => {
        if (stopped) return resolve();
        wake = resolve;
        timer = setTimeout(resolve, ms);
      }).finally(() => {
        clearTimeout(timer);
        wake = undefined;
      }),
    stop() {
      stopped = true;
      wake?.();
    },
    get stopped() {
      return stopped;
    },
  };
}
