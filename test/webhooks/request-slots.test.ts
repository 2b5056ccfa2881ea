import { describe, expect, it } from 'vitest';
import { makeSlots } from '../../src/webhooks/request-slots.ts';

describe('request slots', () => {
  it('hands out `size` slots, then queues in arrival order; a double release frees one slot', async () => {
    const slots = makeSlots(2);
    const a = await slots.acquire();
    const b = await slots.acquire();
    const order: string[] = [];
    const c = slots.acquire().then((s) => (order.push('c'), s));
    const d = slots.acquire().then((s) => (order.push('d'), s));
    expect(slots.inUse()).toBe(2);
    a.release();
    a.release(); // idempotent: does not hand out a second slot
    const sc = await c;
    expect(order).toEqual(['c']);
    expect(slots.inUse()).toBe(2);
    b.release();
    const sd = await d;
    expect(order).toEqual(['c', 'd']);
    sc.release();
    sd.release();
    expect(slots.inUse()).toBe(0);
    await slots.acquire();
    expect(slots.inUse()).toBe(1);
  });
});
