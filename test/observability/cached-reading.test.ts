// The gauges read when scraped (queue depths, active sessions, queued replies) share one reading
// among scrapes that come together and reuse a recent one; a reading that hangs is given up at its
// deadline so that the next scrape asks again.
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

  it('give up a reading that does not end, and ask again at the next scrape', async () => {
    let reads = 0;
    const refresh = cachedReading(() => (++reads === 1 ? new Promise<void>(() => {}) : Promise.resolve()), 60_000, 50);
    await expect(refresh()).rejects.toThrow(/did not end in time/);
    await refresh();
    expect(reads).toBe(2);
    await refresh(); // the second one ended: reused
    expect(reads).toBe(2);
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
