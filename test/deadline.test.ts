import { afterEach, describe, expect, it, vi } from 'vitest';
import { withDeadline } from '../src/deadline.ts';

describe('withDeadline', () => {
  afterEach(() => void vi.useRealTimers());

  it('gives the result of a promise that settles in time and leaves no timer behind', async () => {
    vi.useFakeTimers();
    const p = withDeadline(Promise.resolve(42), 1000, 'too slow');
    await expect(p).resolves.toBe(42);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('passes on the rejection of a promise that fails in time', async () => {
    vi.useFakeTimers();
    await expect(withDeadline(Promise.reject(new Error('refused')), 1000, 'too slow')).rejects.toThrow('refused');
    expect(vi.getTimerCount()).toBe(0);
  });

  it('rejects with the message, or the error built, once the time is up', async () => {
    vi.useFakeTimers();
    const never = new Promise<number>(() => {});
    const byMessage = withDeadline(never, 500, 'database did not answer');
    const byBuilder = withDeadline(never, 500, () => new RangeError('broker did not confirm'));
    const outcomes = Promise.allSettled([byMessage, byBuilder]);
    await vi.advanceTimersByTimeAsync(499);
    expect(vi.getTimerCount()).toBe(2);
    await vi.advanceTimersByTimeAsync(1);
    const [a, b] = await outcomes;
    expect(a).toMatchObject({ status: 'rejected', reason: { message: 'database did not answer' } });
    expect(b.status === 'rejected' && b.reason).toBeInstanceOf(RangeError);
    expect(vi.getTimerCount()).toBe(0);
  });

  it('ignores a late settlement of the promise it gave up on', async () => {
    vi.useFakeTimers();
    let fail!: (err: Error) => void;
    const late = new Promise<number>((_, reject) => (fail = reject));
    const p = withDeadline(late, 10, 'too slow');
    const outcome = p.catch((err: Error) => err.message);
    await vi.advanceTimersByTimeAsync(10);
    fail(new Error('late failure')); // must not surface as an unhandled rejection
    expect(await outcome).toBe('too slow');
  });
});
