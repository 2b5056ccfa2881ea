// What a raw-queue dead letter keeps of its message. A webhook that failed on every attempt (or
// crashed its consumers) is recorded for the project's admins to read and replay; a provider may
// have posted in it what is not this channel's to keep — the Cloud API sends one Meta app's
// changes for all its numbers to one callback URL — and that is left out, as it is of a parse
// error (providers.ts `keptBody`): another number's change keeps its place, field and number, so a
// replay skips it again, and loses nothing this channel would have stored.
import type { DeadLetterBody, Delivery } from '../broker/broker.ts';
import type { ChannelDirectory, KnownChannel } from './channel-directory.ts';
import { EnvelopeHeaders } from './ingress.ts';
import { providerOf } from './providers.ts';
import { BATCH_HEADER, decodeRawBatch, encodeRawBatch, type RawItem } from './raw-batch.ts';

/**
 * A channel deleted since: no number is its own any more, so every change naming one is left out
 * (Meta's phone number ids are digits: this matches none).
 */
const GONE: Pick<KnownChannel, 'config'> = { config: { phone_number_id: '(deleted channel)' } };

export function rawDeadLetterBody(channels: Pick<ChannelDirectory, 'get'>): DeadLetterBody {
  /** One webhook's body as it may be kept; the same Buffer when nothing is left out. */
  async function keptOne(item: Pick<RawItem, 'headers' | 'body'>): Promise<Buffer> {
    const provider = providerOf(item.headers[EnvelopeHeaders.provider] ?? '');
    const channelId = item.headers[EnvelopeHeaders.channelId];
    if (!provider?.keptBody || !channelId) return item.body;
    let body: unknown;
    try {
      body = JSON.parse(item.body.toString('utf8'));
    } catch {
      return item.body; // not JSON: nothing in it says whose it is
    }
    // A lookup that fails (the database away) rejects: the death is recorded later, not whole now.
    const kept = provider.keptBody(body, (await channels.get(channelId)) ?? GONE);
    return kept === body ? item.body : Buffer.from(JSON.stringify(kept));
  }

  return async (d: Delivery) => {
    const count = d.headers[BATCH_HEADER];
    if (count === undefined) return keptOne(d);
    let items: RawItem[];
    try {
      items = decodeRawBatch(d.body, Number(count));
    } catch {
      return d.body; // not a batch that can be read: it was never processed either
    }
    const bodies = await Promise.all(items.map(keptOne));
    if (bodies.every((b, i) => b === items[i].body)) return d.body;
    return encodeRawBatch(items.map((item, i) => ({ ...item, body: bodies[i] })));
  };
}
