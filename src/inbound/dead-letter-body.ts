// What a raw-queue dead letter keeps of its message. A webhook that failed on every attempt (or
// crashed its consumers) is recorded for the project's admins to read and replay; a provider may
// have posted in it what is not this channel's to keep — the Cloud API sends one Meta app's
// changes for all its numbers to one callback URL — and that is left out, as it is of a parse
// error (providers.ts `keptBody`): another number's change keeps its place, field and number, so a
// replay skips it again, and loses nothing this channel would have stored.
//
// It must not stand in the way of the record itself: only a database that cannot answer now makes
// it fail (the death is then recorded later, as the dead-letter write's own failure would make
// it). Anything else it cannot do leaves out more, never less.
import type { Broker, DeadLetterBody, Delivery } from '../broker/broker.ts';
import { Queues } from '../broker/topology.ts';
import { findChannelById } from '../db/channels.sql.ts';
import type { Queryable } from '../db/database.ts';
import { isDatabaseUnavailable } from '../db/unavailable.ts';
import { isUuid } from '../domain/ids.ts';
import type { KnownChannel } from './channel-directory.ts';
import { EnvelopeHeaders } from './ingress.ts';
import { keptBytes, providerOf } from './providers.ts';
import { BATCH_HEADER, decodeRawBatch, encodeRawBatch, type RawItem } from './raw-batch.ts';

type Channel = Pick<KnownChannel, 'config'>;

/**
 * A channel deleted since, or one that cannot be read: no number is known to be its own, so every
 * change naming one is left out (Meta's phone number ids are digits: this matches none).
 */
const NONE_OWN: Channel = { config: { phone_number_id: '(no channel)' } };

/**
 * `channel` reads a live channel's settings (not its secrets: what is kept must not depend on
 * SECRET_KEY being right in this process).
 */
export function rawDeadLetterBody(channel: (id: string) => Promise<Channel | undefined>): DeadLetterBody {
  async function ownerOf(channelId: string): Promise<Channel> {
    if (!isUuid(channelId)) return NONE_OWN;
    try {
      return (await channel(channelId)) ?? NONE_OWN;
    } catch (err) {
      if (isDatabaseUnavailable(err)) throw err;
      return NONE_OWN;
    }
  }

  /** One webhook's body as it may be kept; the same Buffer when nothing is left out. */
  async function keptOne(item: Pick<RawItem, 'headers' | 'body'>): Promise<Buffer> {
    const provider = providerOf(item.headers[EnvelopeHeaders.provider] ?? '');
    const channelId = item.headers[EnvelopeHeaders.channelId];
    if (!provider?.keptBody) return item.body;
    let body: unknown;
    try {
      body = JSON.parse(item.body.toString('utf8'));
    } catch {
      return item.body; // not JSON: nothing in it says whose it is, and it was never processed
    }
    const owner = await ownerOf(channelId ?? '');
    try {
      return keptBytes(item.body, body, (b) => provider.keptBody!(b, owner));
    } catch (err) {
      // Only a body too deeply nested to encode again gets here (it parsed; the processor parks
      // such bodies): kept is what says why, nothing of it.
      return Buffer.from(JSON.stringify({ left_out: `this webhook could not be filtered for what is its channel's, so nothing of it is kept: ${err instanceof Error ? err.message : String(err)}` }));
    }
  }

  return async (d: Delivery) => {
    const count = d.headers[BATCH_HEADER];
    if (count === undefined) return keptOne(d);
    let items: RawItem[];
    try {
      items = decodeRawBatch(d.body, Number(count));
    } catch {
      return d.body; // not a batch that can be read: never processed, and parked when handled
    }
    const bodies = await Promise.all(items.map(keptOne));
    if (bodies.every((b, i) => b === items[i].body)) return d.body;
    return encodeRawBatch(items.map((item, i) => ({ ...item, body: bodies[i] })));
  };
}

/**
 * Says so to the broker for the raw queue. Every process that may write its dead letters calls it:
 * the processor's, and (on RabbitMQ, which drains crashed messages wherever the queues are
 * declared) every process at start, before it declares them.
 */
export function keepRawDeadLetters(broker: Pick<Broker, 'keepInDeadLetters'>, db: Queryable): void {
  broker.keepInDeadLetters(Queues.inboundRaw, rawDeadLetterBody((id) => findChannelById(db, id)));
}
