// Ids: UUID v7 — valid, time-ordered, monotonic within a process, unique.
import { describe, expect, it } from 'vitest';
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

  it('keeps the random part random: no two ids share their last 60 bits', () => {
    const tails = new Set(Array.from({ length: 20_000 }, () => uuidv7().slice(20)));
    expect(tails.size).toBe(20_000);
  });
});
