// The dispatcher's cap on requests in flight across all endpoints (WEBHOOK_CONCURRENCY): slots
// handed out first come, first served. The per-endpoint caps are in endpoint-limits.ts.

export type Slot = { release(): void };

/** `size` slots; a freed slot goes straight to the first in line. A slot's release is idempotent. */
export function makeSlots(size: number): { acquire(): Promise<Slot>; inUse(): number } {
  let used = 0;
  const line: Array<(slot: Slot) => void> = [];
  const slot = (): Slot => {
    let released = false;
    return {
      release() {
        if (released) return;
        released = true;
        const next = line.shift();
        if (next) next(slot()); // the slot passes straight on: `used` is unchanged
        else used--;
      },
    };
  };
  return {
    acquire() {
      if (used < size) {
        used++;
        return Promise.resolve(slot());
      }
      return new Promise((resolve) => line.push(resolve));
    },
    inUse: () => used,
  };
}
