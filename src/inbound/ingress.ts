// The ingress fast path: find the channel (cached), authenticate the raw bytes, check the body is
// a JSON object, and hand it to the raw queue with a publisher confirm — nothing more. The body is
// forwarded as received (no re-encoding); the envelope rides in message headers. Webhooks of one
// project accepted in the same event-loop turn share one message and one confirm (raw-batch.ts);
// while a few such publishes await their confirms, the next one simply grows. If the broker
// does not confirm within a short bound the webhook is spilled to `inbound_events` (the drainer
// republishes it later) and still answered 200; only when the database refuses too is the answer
// 503, so the provider retries. A webhook still waiting for a publish at its deadline is not sent
// at all; a confirm arriving after a spill makes a duplicate, which the processor's dedupe absorbs.
import { isUtf8 } from 'node:buffer';
import { PROJECT_HEADER, errorText, type Broker, type Headers } from '../broker/broker.ts';
import { Queues } from '../broker/topology.ts';
import type { Database } from '../db/database.ts';
import { spillInboundEvent } from '../db/inbound-events.sql.ts';
import { uuidv7 } from '../domain/ids.ts';
import { makeBatcher } from './batcher.ts';
import { checkJson } from './json-check.ts';
import { BATCH_HEADER, encodeRawBatch, type RawItem } from './raw-batch.ts';
import { AppError } from '../errors.ts';
import { logEvery, type Logger } from '../observability/logger.ts';
import { inboundEventsTotal } from '../observability/metrics.ts';
import type { ChannelDirectory, KnownChannel } from './channel-directory.ts';
import type { InboundProvider, IngressRequest } from './providers.ts';

/** Envelope headers on every raw-queue message. */
export const EnvelopeHeaders = {
  provider: 'x-provider',
  channelId: 'x-channel-id',
  receivedAt: 'x-received-at',
  requestId: 'x-request-id',
  projectId: PROJECT_HEADER,
} as const;

export const DEFAULT_PUBLISH_TIMEOUT_MS = 250;
/** Webhooks per raw-queue message at most, and about as many bytes. */
const MAX_BATCH = 100;
const MAX_BATCH_BYTES = 1024 * 1024;
/**
 * Publishes awaiting their confirm at once; webhooks arriving meanwhile form the next one. Two
 * keep one batch filling while one is confirmed. More only cut the batches smaller: the broker's
 * work is mostly per message, and on a machine it shares with the ingress it then takes CPU the
 * ingress needs (ingress benchmark, 5-second runs of one hour, best-of-each ratio to the bare
 * handler: 42–49 % with 8, 54–70 % with 2, three runs each; docs/benchmarks.md has all the runs).
 */
const MAX_PUBLISHES_IN_FLIGHT = 2;

export type IngressDeps = {
  db: Database;
  broker: Broker;
  logger: Logger;
  channels: ChannelDirectory;
  /** How long to wait for the broker's confirm before spilling. */
  publishTimeoutMs?: number;
};

export type Accepted = { eventId: string; spilled: boolean };

export type Ingress = {
  /** The channel a provider URL names, when it exists and has that provider's type. */
  channel(provider: InboundProvider, channelId: string): Promise<KnownChannel>;
  accept(provider: InboundProvider, channelId: string, req: IngressRequest, requestId: string): Promise<Accepted>;
};

export function makeIngress(deps: IngressDeps): Ingress {
  const { db, broker, logger } = deps;
  const timeoutMs = deps.publishTimeoutMs ?? DEFAULT_PUBLISH_TIMEOUT_MS;
  const count = (provider: string, result: string) => inboundEventsTotal.inc({ provider, event: 'webhook', result });
  // During an outage every webhook lands in these: said every few seconds, not every time.
  const spillLog = logEvery(5000);
  const lookupLog = logEvery(5000);
  const refusedLog = logEvery(5000);
  const publishes = makeBatcher<RawItem, void>(
    async (projectId, items) => {
      await broker.send(Queues.inboundRaw, toMessages(projectId, items), { timeoutMs });
      return items.map(() => undefined);
    },
    // The deadline covers waiting for a publish slot as well as the confirm: a webhook is answered
    // within it, spilled if need be, whatever the broker does with its own timeout.
    { maxBatch: MAX_BATCH, maxInflight: MAX_PUBLISHES_IN_FLIGHT, deadlineMs: timeoutMs + 50, deadlineMessage: 'broker did not confirm in time' },
  );

  async function channel(provider: InboundProvider, channelId: string): Promise<KnownChannel> {
    let c: KnownChannel | undefined;
    try {
      c = await deps.channels.get(channelId);
    } catch (err) {
      // The channel is not cached and the database cannot say: the provider must retry later, so
      // this is a 503 with Retry-After, never a 500 (a provider may treat 5xx alike, a person not).
      count(provider.name, 'unavailable');
      lookupLog((heldBack) => logger.error({ channel_id: channelId, err: errorText(err), also_refused: heldBack }, 'webhook refused: channel lookup failed'));
      throw new AppError('unavailable', 'cannot accept webhooks right now; retry later', undefined, { 'retry-after': '5' });
    }
    if (!c || c.type !== provider.channelType) {
      count(provider.name, 'unknown_channel');
      throw new AppError('not_found', `no ${provider.name} channel ${channelId}`);
    }
    return c;
  }

  return {
    channel,

    async accept(provider, channelId, req, requestId) {
      const c = await channel(provider, channelId);
      const verdict = provider.verify(c, req);
      if (!verdict.ok) {
        count(provider.name, 'unauthorized');
        throw new AppError('invalid_signature', verdict.reason);
      }
      const malformed = jsonObjectFault(req.rawBody);
      if (malformed) {
        count(provider.name, 'malformed');
        throw new AppError('bad_json', malformed);
      }

      const eventId = uuidv7();
      const receivedAt = new Date();
      const headers: Headers = {
        [EnvelopeHeaders.provider]: provider.name,
        [EnvelopeHeaders.channelId]: c.id,
        [EnvelopeHeaders.projectId]: c.projectId,
        [EnvelopeHeaders.receivedAt]: receivedAt.toISOString(),
        [EnvelopeHeaders.requestId]: requestId,
      };
      try {
        await publishes.submit(c.projectId, { messageId: eventId, body: req.rawBody, headers });
        count(provider.name, 'queued');
        return { eventId, spilled: false };
      } catch (publishErr) {
        try {
          await spillInboundEvent(db, { id: eventId, provider: provider.name, channelId: c.id, headers, body: req.rawBody, receivedAt });
          count(provider.name, 'spilled');
          spillLog((heldBack) => logger.warn({ spilled: heldBack + 1, err: errorText(publishErr) }, 'broker did not confirm; webhooks spilled to the database'));
          return { eventId, spilled: true };
        } catch (spillErr) {
          count(provider.name, 'unavailable');
          refusedLog((heldBack) => logger.error({ event_id: eventId, publish_error: errorText(publishErr), spill_error: errorText(spillErr), also_refused: heldBack }, 'webhook refused: broker and database both failed'));
          throw new AppError('unavailable', 'cannot accept webhooks right now; retry later', undefined, { 'retry-after': '5' });
        }
      }
    },
  };
}

/** Webhooks in arrival order, a batch message per MAX_BATCH_BYTES or so; one alone stays plain. */
function toMessages(projectId: string, items: readonly RawItem[]): RawItem[] {
  const out: RawItem[] = [];
  let chunk: RawItem[] = [];
  let bytes = 0;
  const flush = () => {
    if (chunk.length === 1) out.push(chunk[0]);
    else if (chunk.length > 1) out.push({ messageId: uuidv7(), headers: { [BATCH_HEADER]: String(chunk.length), [PROJECT_HEADER]: projectId }, body: encodeRawBatch(chunk) });
    chunk = [];
    bytes = 0;
  };
  for (const item of items) {
    if (bytes > 0 && bytes + item.body.length > MAX_BATCH_BYTES) flush();
    chunk.push(item);
    bytes += item.body.length;
  }
  flush();
  return out;
}

/**
 * The one check of the body the ingress makes: UTF-8 JSON with an object at the top, because
 * every provider sends one and anything else can only become a parse error later. The bytes are
 * walked, not parsed (json-check.ts): the value would be thrown away. Says what is wrong, if
 * anything.
 */
function jsonObjectFault(raw: Buffer): string | undefined {
  if (raw.length === 0) return 'the body is empty';
  if (!isUtf8(raw)) return 'the body is not valid UTF-8';
  const verdict = checkJson(raw);
  if (!verdict.ok) return `the body is not JSON: ${verdict.reason}`;
  if (verdict.top !== 'object') return 'the body must be a JSON object';
  return undefined;
}
