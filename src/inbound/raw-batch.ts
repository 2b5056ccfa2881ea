// Several webhooks in one raw-queue message: the ingress's group commit. Webhooks of one project
// that wait together for a publish (those of one event-loop turn, and those that arrive while the
// publishes in flight await their confirms) share one publish and one confirm, so the broker
// stores one message (one quorum-queue entry, one fsync share) instead of one each. A message
// with the BATCH_HEADER carries them; one webhook alone still travels as a plain message.
//
// Body: for each webhook, a 4-byte big-endian length and the JSON of {id, headers}, then a 4-byte
// length and the raw body exactly as received.
import type { Headers } from '../broker/broker.ts';
import { isRecord } from '../domain/inbound.ts';

/** On a batch message: how many webhooks it carries. */
export const BATCH_HEADER = 'x-batch';

export type RawItem = { messageId: string; headers: Headers; body: Buffer };

export function encodeRawBatch(items: readonly RawItem[]): Buffer {
  // One allocation for the whole message: the bodies are copied once, straight into it.
  const metas = items.map((item) => JSON.stringify({ id: item.messageId, headers: item.headers }));
  let size = 0;
  for (let i = 0; i < items.length; i++) size += 8 + Buffer.byteLength(metas[i]) + items[i].body.length;
  const out = Buffer.allocUnsafe(size);
  let at = 0;
  for (let i = 0; i < items.length; i++) {
    const metaLength = out.write(metas[i], at + 4);
    out.writeUInt32BE(metaLength, at);
    at += 4 + metaLength;
    out.writeUInt32BE(items[i].body.length, at);
    at += 4 + items[i].body.copy(out, at + 4);
  }
  return out;
}

/** The webhooks of a batch body; throws when the body is not one (truncated, bad metadata). */
export function decodeRawBatch(buf: Buffer, expected?: number): RawItem[] {
  const items: RawItem[] = [];
  let at = 0;
  const take = (what: string): Buffer => {
    if (at + 4 > buf.length) throw new Error(`batch truncated before the length of ${what} ${items.length + 1}`);
    const n = buf.readUInt32BE(at);
    at += 4;
    if (at + n > buf.length) throw new Error(`batch truncated inside ${what} ${items.length + 1}`);
    const part = buf.subarray(at, at + n);
    at += n;
    return part;
  };
  while (at < buf.length) {
    const meta: unknown = JSON.parse(take('the envelope of webhook').toString('utf8'));
    if (!isMeta(meta)) throw new Error(`batch envelope ${items.length + 1} is not {id, headers}`);
    items.push({ messageId: meta.id, headers: meta.headers, body: take('webhook') });
  }
  if (expected !== undefined && items.length !== expected) throw new Error(`batch holds ${items.length} webhooks, its header says ${expected}`);
  return items;
}

function isMeta(v: unknown): v is { id: string; headers: Headers } {
  return isRecord(v) && typeof v.id === 'string' && isRecord(v.headers) && Object.values(v.headers).every((h) => typeof h === 'string');
}
