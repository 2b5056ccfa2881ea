// Ids: UUID v7 — valid, time-ordered, monotonic within a process, unique.
import { describe, expect, it, vi } from 'vitest';
import { isUuid, uuidv7 } from '../src/domain/ids.ts';

describe('uuidv7', () => {
  it('is a valid version 7, RFC 9562 variant UUID carrying the millisecond time', () => {
    const before = Date.now();
    const id = uuidv7();
    const after = Date.now();
    expect(isUuid(id)).toBe(true);
    expect(id[14]).toBe('7');
    expect(['8', '9', 'a', 'b']).toContain(id[19]);
    const ms = parseInt(id.replace(/-/g, '').slice(0, 12), 16);
    expect(ms).toBeGreaterThanOrEqual(before);
    expect(ms).toBeLessThanOrEqual(after + 1); // +1: a wrapped counter borrows the next millisecond
  });

  it('sorts in creation order and never repeats, also many in one millisecond', () => {
    const ids = Array.from({ length: 50_000 }, () => uuidv7());
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
  });

  it('with a clock that stands still or goes back, counts on and borrows the next milliseconds', async () => {
    // A module of its own: the ids it makes here are dated a minute ahead, and its state stays here.
    vi.resetModules();
    const { uuidv7: fresh } = await import('../src/domain/ids.ts');
    expect(fresh(0)).toMatch(/^00000000-0000-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/); // a first id of time 0
    const ms = (id: string) => parseInt(id.replace(/-/g, '').slice(0, 12), 16);
    const now = Date.now() + 60_000; // later than any id made so far: its first id carries it exactly
    const first = fresh(now);
    expect(ms(first)).toBe(now);
    // 10,000 ids in "one millisecond", then a clock gone back: the 12-bit counter wraps at least twice.
    const ids = [first, ...Array.from({ length: 10_000 }, () => fresh(now)), ...Array.from({ length: 100 }, () => fresh(now - 5_000))];
    expect(ids.every(isUuid)).toBe(true);
    expect(new Set(ids).size).toBe(ids.length);
    expect([...ids].sort()).toEqual(ids);
    const last = ms(ids[ids.length - 1]);
    expect(last).toBeGreaterThanOrEqual(now + 2);
    expect(last).toBeLessThanOrEqual(now + 3);
    for (const id of ids) {
      expect(id).toMatch(/^[0-9a-f]{8}-[0-9a-f]{4}-7[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
    }
  });

  it('keeps the random part random: no two ids share their last 60 bits', () => {
    const tails = new Set(Array.from({ length: 20_000 }, () => uuidv7().slice(20)));
    expect(tails.size).toBe(20_000);
  });
});
