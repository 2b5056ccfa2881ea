// Reading an answer from a server we do not control (a tenant's provider URL, a subscriber's
// endpoint): never more than a bound, whatever it streams, and the connection dropped past it.

export type BoundedRead = {
  /** The first `keep` bytes read. */
  kept: Buffer;
  /** Bytes read in all, never more than `max`. */
  total: number;
  /** The body ended before `max` bytes. */
  whole: boolean;
  /** Reading failed after `total` bytes (reset, aborted): what was read is still reported. */
  error?: unknown;
};

/**
 * Reads `body` up to `max` bytes, keeping the first `keep` of them. Stopping early ends the
 * iteration, which cancels a web stream and destroys a Node one: the rest is never received.
 */
export async function readBounded(body: AsyncIterable<Uint8Array> | null | undefined, max: number, keep = max): Promise<BoundedRead> {
  const kept: Buffer[] = [];
  let keptLength = 0;
  let total = 0;
  const done = (whole: boolean, error?: unknown): BoundedRead => ({ kept: Buffer.concat(kept, keptLength), total, whole, ...(error === undefined ? {} : { error }) });
  if (!body) return done(true);
  try {
    for await (const chunk of body) {
      const piece = Buffer.from(chunk.buffer, chunk.byteOffset, Math.min(chunk.byteLength, max - total));
      total += piece.length;
      if (keptLength < keep) {
        const part = piece.subarray(0, keep - keptLength);
        kept.push(part);
        keptLength += part.length;
      }
      // At `max` it stops without waiting to learn whether more would come: a server that sends
      // exactly `max` bytes and then nothing, never ending, must not hold the reader.
      if (total >= max) return done(false);
    }
    return done(true);
  } catch (err) {
    return done(false, err);
  }
}
