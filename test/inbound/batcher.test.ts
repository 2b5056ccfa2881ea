// The batcher behind the ingress's group commit and the processor's shared transactions: items of
// one turn go together, at most `maxInflight` batches run, and with a deadline nothing waits
// longer than it (an item still in line at its deadline never runs). Fake clock: no real waiting.
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest';
import { DeadlineError, makeBatcher } from '../../src/inbound/batcher.ts';

type Run = { key: string; items: number[]; finish(results?: string[]): void; fail(err: Error): void };

/** A runner whose batches finish only when the test says so. */
function controlledRunner() {
  const runs: Run[] = [];
  const runner = (key: string, items: number[]) =>
    new Promise<string[]>((resolve, reject) => {
      runs.push({ key, items, finish: (results) => resolve(results ?? items.map((i) => `done ${i}`)), fail: reject });
    });
  return { runs, runner };
}

/** Settles into a plain record, so an unsettled promise is visible as such. */
function track<T>(p: Promise<T>) {
  const t: { value?: T; error?: unknown; settled: boolean } = { settled: false };
  p.then(
    (v) => Object.assign(t, { value: v, settled: true }),
    (e) => Object.assign(t, { error: e, settled: true }),
  );
  return t;
}

describe('makeBatcher', () => {
  beforeEach(() => void vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'setImmediate', 'Date'] }));
  afterEach(() => void vi.useRealTimers());

  it('runs the items of one turn together, per key, and grows the next batch while the slots are busy', async () => {
    const { runs, runner } = controlledRunner();
    const b = makeBatcher(runner, { maxBatch: 10, maxInflight: 1 });
    const first = [1, 2, 3].map((i) => track(b.submit('a', i)));
    await vi.advanceTimersByTimeAsync(0);
    expect(runs.map((r) => r.items)).toEqual([[1, 2, 3]]);
    const waiting = [4, 5].map((i) => track(b.submit('a', i)));
    await vi.advanceTimersByTimeAsync(0);
    expect(runs).toHaveLength(1); // the one slot is busy: 4 and 5 wait
    runs[0].finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(first.map((t) => t.value)).toEqual(['done 1', 'done 2', 'done 3']);
    expect(runs.map((r) => r.items)).toEqual([[1, 2, 3], [4, 5]]);
    runs[1].finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(waiting.map((t) => t.value)).toEqual(['done 4', 'done 5']);
  });

  it('rejects every item of a batch that throws', async () => {
    const { runs, runner } = controlledRunner();
    const b = makeBatcher(runner, { maxBatch: 10, maxInflight: 2 });
    const items = [1, 2].map((i) => track(b.submit('a', i)));
    await vi.advanceTimersByTimeAsync(0);
    runs[0].fail(new Error('broker said no'));
    await vi.advanceTimersByTimeAsync(0);
    expect(items.map((t) => (t.error as Error).message)).toEqual(['broker said no', 'broker said no']);
  });

  it('rejects a running item at its deadline, and ignores the answer that comes later', async () => {
    const { runs, runner } = controlledRunner();
    const b = makeBatcher(runner, { maxBatch: 10, maxInflight: 1, deadlineMs: 300, deadlineMessage: 'too slow' });
    const late = track(b.submit('a', 1));
    await vi.advanceTimersByTimeAsync(299);
    expect(late.settled).toBe(false);
    await vi.advanceTimersByTimeAsync(1);
    expect(late.error).toBeInstanceOf(DeadlineError);
    expect((late.error as Error).message).toBe('too slow');
    runs[0].finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(late.value).toBeUndefined();
  });

  it('takes an item still waiting for a slot at its deadline out of the line: it never runs', async () => {
    const { runs, runner } = controlledRunner();
    const b = makeBatcher(runner, { maxBatch: 10, maxInflight: 1, deadlineMs: 300 });
    const running = track(b.submit('a', 1));
    await vi.advanceTimersByTimeAsync(200);
    const waiting = track(b.submit('a', 2)); // due at 500
    const other = track(b.submit('b', 3)); // another key, due at 500
    await vi.advanceTimersByTimeAsync(100);
    expect(running.error).toBeInstanceOf(DeadlineError);
    await vi.advanceTimersByTimeAsync(1); // 1's slot is given back at its deadline: 2 runs, 3 waits
    expect(runs.map((r) => r.items)).toEqual([[1], [2]]);
    await vi.advanceTimersByTimeAsync(199); // 3 is still in line at its deadline
    expect(waiting.error).toBeInstanceOf(DeadlineError);
    expect(other.error).toBeInstanceOf(DeadlineError);
    runs[0].finish();
    runs[1].finish();
    await vi.advanceTimersByTimeAsync(10);
    expect(runs.map((r) => r.items)).toEqual([[1], [2]]); // 3 never ran
    const after = track(b.submit('b', 4));
    await vi.advanceTimersByTimeAsync(1);
    runs[2].finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(after.value).toBe('done 4');
  });

  it('gives each item of a batch its own deadline, and the slot back once all have passed', async () => {
    const { runs, runner } = controlledRunner();
    const b = makeBatcher(runner, { maxBatch: 10, maxInflight: 1, deadlineMs: 300 });
    const first = track(b.submit('a', 1)); // runs alone, and its run never ends
    await vi.advanceTimersByTimeAsync(100);
    const second = track(b.submit('a', 2)); // due at 400
    await vi.advanceTimersByTimeAsync(100);
    const third = track(b.submit('a', 3)); // due at 500
    await vi.advanceTimersByTimeAsync(101); // 1 passes its deadline; 2 and 3 run together
    expect(first.error).toBeInstanceOf(DeadlineError);
    expect(runs.map((r) => r.items)).toEqual([[1], [2, 3]]);
    await vi.advanceTimersByTimeAsync(99); // 400: 2's deadline, not 3's
    expect(second.error).toBeInstanceOf(DeadlineError);
    expect(third.settled).toBe(false);
    const fourth = track(b.submit('a', 4));
    await vi.advanceTimersByTimeAsync(50);
    expect(runs).toHaveLength(2); // the batch of 2 and 3 still holds the slot: 3 is still waiting for it
    await vi.advanceTimersByTimeAsync(51); // 500: 3's deadline; the slot comes back and 4 runs
    expect(third.error).toBeInstanceOf(DeadlineError);
    expect(runs.map((r) => r.items)).toEqual([[1], [2, 3], [4]]);
    runs[2].finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(fourth.value).toBe('done 4');
  });

  it('does not run an item whose deadline passed before a slot came free', async () => {
    const { runs, runner } = controlledRunner();
    const b = makeBatcher(runner, { maxBatch: 10, maxInflight: 1, deadlineMs: 300 });
    track(b.submit('a', 1));
    await vi.advanceTimersByTimeAsync(100);
    const waiting = track(b.submit('a', 2)); // due at 400
    // The clock reaches 400 before the line's timer has had its turn, and then the slot frees up.
    vi.setSystemTime(Date.now() + 300);
    runs[0].finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(waiting.error).toBeInstanceOf(DeadlineError);
    expect(runs.map((r) => r.items)).toEqual([[1]]);
  });

  it('answers every item through many batches and leaves no timer behind', async () => {
    const { runs, runner } = controlledRunner();
    const b = makeBatcher(runner, { maxBatch: 50, maxInflight: 2, deadlineMs: 300 }); // three keys: one waits each round
    const all = [];
    for (let round = 0; round < 40; round++) {
      for (let i = 0; i < 50; i++) all.push(track(b.submit(`k${i % 3}`, round * 50 + i)));
      await vi.advanceTimersByTimeAsync(10);
      for (const r of runs.splice(0)) r.finish();
      await vi.advanceTimersByTimeAsync(0);
      for (const r of runs.splice(0)) r.finish(); // the key that waited
      await vi.advanceTimersByTimeAsync(0);
    }
    await vi.advanceTimersByTimeAsync(0);
    for (const r of runs.splice(0)) r.finish();
    await vi.advanceTimersByTimeAsync(0);
    expect(all.every((t) => t.settled && t.error === undefined)).toBe(true);
    expect(vi.getTimerCount()).toBe(0); // answered, and no timer keeps the process up
  });
});
