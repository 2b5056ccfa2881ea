import { randomFillSync } from 'node:crypto';

let lastMs = 0;
let seq = 0;

// Random bytes come from a pool refilled 4 KiB at a time (ids are made on every request and every
// event): one call into the random generator per few hundred ids instead of one per id.
const POOL_SIZE = 4096;
const pool = Buffer.alloc(POOL_SIZE);
let poolOffset = POOL_SIZE;

function randomFrom(n: number): number {
  if (poolOffset + n > POOL_SIZE) {
    randomFillSync(pool);
    poolOffset = 0;
  }
  const at = poolOffset;
  poolOffset += n;
  return at;
}

/**
 * UUID version 7 (RFC 9562): 48-bit unix milliseconds, then randomness, so ids sort by creation
 * time. Within one millisecond a 12-bit counter in `rand_a` keeps ids from one process monotonic.
 */
export function uuidv7(now = Date.now()): string {
  if (now <= lastMs) {
    seq = (seq + 1) & 0xfff;
    if (seq === 0) lastMs += 1; // counter wrapped: borrow the next millisecond
    now = lastMs;
  } else {
    lastMs = now;
    seq = pool.readUInt16BE(randomFrom(2)) & 0x3ff; // random start, headroom to count up
  }
  // Bytes 0–7 are time, version and counter; only 8–15 are random.
  const b = Buffer.allocUnsafe(16);
  const at = randomFrom(8);
  pool.copy(b, 8, at, at + 8);
  b.writeUIntBE(now, 0, 6);
  b[6] = 0x70 | (seq >> 8);
  b[7] = seq & 0xff;
  b[8] = (b[8] & 0x3f) | 0x80;
  const h = b.toString('hex');
  return `${h.slice(0, 8)}-${h.slice(8, 12)}-${h.slice(12, 16)}-${h.slice(16, 20)}-${h.slice(20)}`;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: unknown): s is string => typeof s === 'string' && UUID_RE.test(s);
