import { describe, expect, it } from 'vitest';
import { makeStoppableSleep } from '../../src/timers/stoppable-sleep.ts';

describe('stoppable sleep', () => {
  it('cuts the current sleep short on stop, and later sleeps return at once', async () => {
    const rest = makeStoppableSleep();
    const t0 = Date.now();
    const long = rest.sleep(3_600_000);
    expect(rest.stopped).toBe(false);
    rest.stop();
    await long;
    await rest.sleep(3_600_000);
    expect(rest.stopped).toBe(true);
    expect(Date.now() - t0).toBeLessThan(5_000);
  });
});
