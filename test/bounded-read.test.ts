import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { readBounded } from '../src/bounded-read.ts';

const bytes = (n: number, fill = 'x') => new Uint8Array(Buffer.alloc(n, fill));

describe('readBounded', () => {
  it('reads a short body whole', async () => {
    const read = await readBounded(Readable.from([bytes(3, 'a'), bytes(2, 'b')]), 10);
    expect(read).toEqual({ kept: Buffer.from('aaabb'), total: 5, whole: true });
  });

  it('stops an endless web stream at the bound and cancels it', async () => {
    let cancelled = false;
    let pulls = 0;
    const endless = new ReadableStream<Uint8Array>({
      pull: (c) => {
        pulls++;
        c.enqueue(bytes(1000));
      },
      cancel: () => {
        cancelled = true;
      },
    });
    const read = await readBounded(endless, 2500);
    expect(read.total).toBe(2500);
    expect(read.kept.length).toBe(2500);
    expect(read.whole).toBe(false);
    expect(cancelled).toBe(true);
    expect(pulls).toBeLessThan(10);
  });

  it('keeps only the first `keep` bytes while counting up to `max`, and destroys a Node stream it leaves', async () => {
    const source = Readable.from((function* () {
      for (;;) yield bytes(700, 'z');
    })());
    const read = await readBounded(source, 2000, 1024);
    expect(read.kept).toEqual(Buffer.alloc(1024, 'z'));
    expect(read.total).toBe(2000);
    expect(read.whole).toBe(false);
    expect(source.destroyed).toBe(true);
  });

  it('does not wait for more once it has `max` bytes', async () => {
    // Exactly `max` bytes, then a stream that never ends: answered at once, not whole.
    const hanging = new ReadableStream<Uint8Array>({
      start: (c) => c.enqueue(bytes(100)),
    });
    const read = await readBounded(hanging, 100);
    expect(read).toMatchObject({ total: 100, whole: false });
  });

  it('reports what it read before the body failed, with the error', async () => {
    const failing = Readable.from((async function* () {
      yield bytes(10, 'q');
      throw new Error('connection reset');
    })());
    const read = await readBounded(failing, 100);
    expect(read.kept.toString()).toBe('q'.repeat(10));
    expect(read.total).toBe(10);
    expect(read.whole).toBe(false);
    expect((read.error as Error).message).toBe('connection reset');
  });

  it('treats no body as an empty whole one', async () => {
    expect(await readBounded(null, 10)).toEqual({ kept: Buffer.alloc(0), total: 0, whole: true });
  });
});
