// The gauges read when scraped (queue depths, active sessions, queued replies) share one reading
// among scrapes that come together and reuse a recent one; one that hangs is not joined by others.
import { describe, expect, it } from 'vitest';
import { cachedReading } from '../../src/observability/queue-gauges.ts';

describe('gauge readings', () => {
  it('share one reading among scrapes that come together, and reuse it while it is recent', async () => {
    let reads = 0;
    const refresh = cachedReading(async () => void reads++, 60_000);
    await Promise.all([refresh(), refresh(), refresh()]);
    await refresh();
    expect(reads).toBe(1);
  });

  it('start no other reading while one goes on, however long it takes', async () => {
    let reads = 0;
    let end!: () => void;
    const refresh = cachedReading(() => {
      reads++;
      return reads === 1 ? new Promise<void>((r) => (end = r)) : Promise.resolve();
    }, 60_000);
    const first = refresh();
    const second = refresh(); // shares the one under way
    expect(reads).toBe(1); // no pile of readings behind one that hangs
    end();
    await Promise.all([first, second]);
    await refresh(); // it ended: its values are the latest, and recent
    expect(reads).toBe(1);
  });

  it('ask again after a failed reading', async () => {
    let reads = 0;
    const refresh = cachedReading(async () => {
      if (++reads === 1) throw new Error('broker refused');
    }, 60_000);
    await expect(refresh()).rejects.toThrow(/refused/);
    await refresh();
    expect(reads).toBe(2);
  });
});
