import { randomFillSync } from 'node:crypto';

let lastMs = 0;
let seq = 0;
/** `xxxxxxxx-xxxx-`: the id's first two groups, the time of `lastMs`, made once per millisecond. */
let timePrefix = '';

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

/** Two hex digits for each byte value. */
const HEX = Array.from({ length: 256 }, (_, byte) => byte.toString(16).padStart(2, '0'));

function setTime(ms: number): void {
  lastMs = ms;
  const h = ms.toString(16).padStart(12, '0');
  timePrefix = `${h.slice(0, 8)}-${h.slice(8)}-`;
}
setTime(0); // the prefix always matches lastMs, a first id of time 0 included

/**
 * UUID version 7 (RFC 9562): 48-bit unix milliseconds, then randomness, so ids sort by creation
 * time. Within one millisecond a 12-bit counter in `rand_a` keeps ids from one process monotonic.
 * Built as text straight from the bytes (a table lookup each), with the time's text made once per
 * millisecond: two ids are made for every webhook the ingress takes.
 */
export function uuidv7(now = Date.now()): string {
  if (now <= lastMs) {
    seq = (seq + 1) & 0xfff;
    if (seq === 0) setTime(lastMs + 1); // counter wrapped: borrow the next millisecond
  } else {
    setTime(now);
    const at = randomFrom(2);
    seq = ((pool[at] << 8) | pool[at + 1]) & 0x3ff; // random start, headroom to count up
  }
  // Version 7 and the counter; then 62 random bits under the variant's two (binary 10).
  const r = randomFrom(8);
  const p = pool;
  return (
    timePrefix + '7' + HEX[seq >> 8][1] + HEX[seq & 0xff] + '-' +
    HEX[(p[r] & 0x3f) | 0x80] + HEX[p[r + 1]] + '-' +
    HEX[p[r + 2]] + HEX[p[r + 3]] + HEX[p[r + 4]] + HEX[p[r + 5]] + HEX[p[r + 6]] + HEX[p[r + 7]]
  );
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;
export const isUuid = (s: unknown): s is string => typeof s === 'string' && UUID_RE.test(s);
