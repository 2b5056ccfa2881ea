// The raw-queue consumer: envelope headers → channel → provider parser → the inbound transaction.
// It knows providers only through providers.ts, and the transaction only through InboundEvents.
//
// Outcomes of one delivery:
// - stored (or found to be a duplicate, or ignored and counted): acked;
// - malformed (not JSON, not the provider's shape, or a parser that throws on it), or refused by
//   the database for a value it holds (input-refusal.ts): parked in parse_errors with the raw body
//   and the reason, and acked — retrying cannot help;
// - a reference to a message not stored yet (an ack that overtook its message): thrown, so the
//   broker retries it later; on the last attempt (`retryDelaysMs`) it is parked in parse_errors,
//   counted as `unknown_target`, and acked — a status of a message sent by other means (Meta's
//   dashboard, before the channel existed) never finds its target, and is routine, not a fault;
// - any other failure (database away, a conflict): thrown, retried by the broker.
//
// A batch message (raw-batch.ts) is taken apart and its webhooks handled as above, together. A
// malformed batch is parked whole. When none of them could be done the batch is thrown, retried
// and dead-lettered whole; when only some could, those others are sent back to the queue one by
// one and the batch is done: each then starts its own retries afresh, the first at once (not after
// a delay), and the stored ones are not redone. If that send fails the batch is retried whole, and
// webhooks it had parked are parked (and counted) again.
import { PROJECT_HEADER, errorText, retryDelayAfter, type Broker, type Consumer, type Delivery, type Handler } from '../broker/broker.ts';
import { consumerComponent, startConsumer } from '../broker/consumer-runner.ts';
import { Queues } from '../broker/topology.ts';
import type { Database } from '../db/database.ts';
import { insertParseError } from '../db/parse-errors.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { isDatabaseUnavailable } from '../db/unavailable.ts';
import { isUuid, uuidv7 } from '../domain/ids.ts';
import { parseStorableJson } from '../domain/text.ts';
import { isRecord, type InboundEvent } from '../domain/inbound.ts';
import type { Logger } from '../observability/logger.ts';
import { eventLabel, inboundEventsTotal } from '../observability/metrics.ts';
import { DuplicateRace, makeInboundService, type InboundItem, type InboundService, type ItemOutcome } from '../services/inbound.service.ts';
import { makeBatcher } from './batcher.ts';
import type { ChannelDirectory } from './channel-directory.ts';
import { keepRawDeadLetters } from './dead-letter-body.ts';
import { EnvelopeHeaders } from './ingress.ts';
import { isInputRefusal } from './input-refusal.ts';
import { keptBytes, providerOf } from './providers.ts';
import { BATCH_HEADER, decodeRawBatch, type RawItem } from './raw-batch.ts';
import type { Component } from '../deadline.ts';

export const PROCESSOR_NAME = 'inbound-processor';

export type ProcessorDeps = {
  db: Database;
  broker: Broker;
  logger: Logger;
  channels: ChannelDirectory;
  service?: InboundService;
};

export type ProcessorOptions = {
  /** Deliveries handled at once (the broker prefetch). */
  concurrency?: number;
  /** Webhooks per transaction at most. */
  maxBatch?: number;
  /** Transactions at once; PGlite, a single connection, gets 1. */
  maxInflight?: number;
  /**
   * The raw queue's retry delays (CONSUMER_RETRY_DELAYS): a reference to a message still not
   * stored on the last attempt is parked instead of thrown into the dead letters. Without them
   * (the broker's own, unknown here) it is thrown every time, as any failure.
   */
  retryDelaysMs?: readonly number[];
};

/** A reference to a message the channel does not have yet: try again later. */
export class TargetNotStored extends Error {
  constructor(reason: string) {
    super(reason);
    this.name = 'TargetNotStored';
  }
}

type Result = ItemOutcome & { error?: unknown };

export function makeInboundHandler(deps: ProcessorDeps, opts: ProcessorOptions = {}): Handler {
  const { db, logger } = deps;
  const service = deps.service ?? makeInboundService({ db });

  // A batch that rolls back is retried item by item, so one bad item (or a lost race) costs only
  // itself: the others commit, and it alone goes back to the broker.
  async function runBatch(projectId: string, items: InboundItem[]): Promise<Result[]> {
    try {
      return await service.apply(projectId, items);
    } catch (err) {
      if (items.length === 1 && !(err instanceof DuplicateRace)) return [{ error: err }];
      // The database is not there: no item can do better alone, and fifty transactions each
      // waiting for a connection would only hold this slot and load it as it comes back.
      if (isDatabaseUnavailable(err)) return items.map(() => ({ error: err }));
    }
    const results: Result[] = [];
    for (const item of items) {
      let outcome: Result | undefined;
      for (let attempt = 0; !outcome; attempt++) {
        try {
          outcome = (await service.apply(projectId, [item]))[0];
        } catch (err) {
          // Lost the race to a copy of the same message: once more, and it reads as a duplicate.
          if (!(err instanceof DuplicateRace) || attempt > 0) outcome = { error: err };
        }
      }
      results.push(outcome);
    }
    return results;
  }

  const batcher = makeBatcher<InboundItem, Result>(runBatch, {
    maxBatch: opts.maxBatch ?? 50,
    maxInflight: opts.maxInflight ?? (db.kind === 'pglite' ? 1 : 4),
  });

  async function park(
    d: RawItem,
    reason: string,
    ctx: { provider: string; projectId: string | null; channelId: string | null; body?: unknown; keep?: (body: unknown) => unknown },
    count = true,
  ) {
    const eventType = eventTypeOf(ctx.body);
    const row = {
      id: uuidv7(),
      projectId: ctx.projectId,
      channelId: ctx.channelId,
      provider: ctx.provider,
      eventType,
      reason,
      body: ctx.body === undefined ? d.body : keptBytes(d.body, ctx.body, ctx.keep),
      headers: d.headers,
    };
    if (ctx.projectId) await withTransaction(db, (tx) => insertParseError(tx, row), { projectId: ctx.projectId });
    else await insertParseError(db, row);
    if (count) inboundEventsTotal.inc({ provider: ctx.provider, event: eventType === null ? 'unknown' : eventLabel(eventType), result: 'parse_error' });
    logger.warn({ message_id: d.messageId, provider: ctx.provider, channel_id: ctx.channelId, reason }, 'malformed webhook parked in parse_errors');
  }

  /** One webhook: a plain message, or one of a batch; `attempt` is its queue message's. */
  async function handleOne(d: RawItem, attempt: number): Promise<void> {
    const providerName = d.headers[EnvelopeHeaders.provider] ?? 'unknown';
    const channelId = d.headers[EnvelopeHeaders.channelId];
    const receivedAt = new Date(d.headers[EnvelopeHeaders.receivedAt] ?? Date.now());
    const provider = providerOf(providerName);
    if (!provider || !channelId || Number.isNaN(receivedAt.getTime())) {
      return park(d, 'the queue message has no valid envelope headers (provider, channel, received time)', { provider: providerName, projectId: null, channelId: null });
    }
    const channel = await deps.channels.get(channelId);
    if (!channel) {
      // Deleted since the ingress accepted the webhook: nothing to attach it to.
      inboundEventsTotal.inc({ provider: provider.name, event: 'webhook', result: 'unknown_channel' });
      logger.info({ message_id: d.messageId, channel_id: channelId }, 'webhook for a channel that no longer exists dropped');
      return;
    }

    const ctx = { provider: provider.name, projectId: channel.projectId, channelId: channel.id, keep: (b: unknown) => provider.keptBody?.(b, channel) ?? b };
    let body: unknown;
    let events: InboundEvent[];
    try {
      body = parseStorableJson(d.body.toString('utf8'));
      events = provider.parse(body, channel);
    } catch (err) {
      // ParseError for malformed input; anything else a parser throws on hostile input is the same
      // verdict: this body cannot be processed, now or later.
      return park(d, err instanceof Error ? err.message : String(err), { ...ctx, body });
    }

    const result = await batcher.submit(channel.projectId, { channel, events, receivedAt });
    if (result.error) {
      // Refused for what it holds (a batch that failed was retried item by item, so this error is
      // this webhook's own): parked like any malformed input, not retried into a dead letter.
      if (isInputRefusal(result.error)) return park(d, `the database refused a value in it: ${errorText(result.error)}`, { ...ctx, body });
      throw result.error;
    }
    const lastAttempt = opts.retryDelaysMs !== undefined && retryDelayAfter(attempt, opts.retryDelaysMs) === undefined;
    if (result.retry && !lastAttempt) throw new TargetNotStored(result.retry);
    // What is kept of it: items that could not be read (each counted as `malformed`), once the rest
    // is stored (a retry before this point stores nothing twice and parks once), and references
    // still unresolved on the last attempt — one row, with both reasons.
    const reasons: string[] = [];
    if (result.retry) {
      inboundEventsTotal.inc({ provider: provider.name, event: 'webhook', result: 'unknown_target' });
      logger.info({ message_id: d.messageId, channel_id: channel.id, attempt, reason: result.retry }, 'webhook refers to a message this channel does not have: parked');
      reasons.push(`${result.retry}, after ${attempt} attempts`);
    }
    const unread = events.flatMap((e) => (e.kind === 'ignored' && e.reason === 'malformed' ? [e.detail ?? 'unreadable item'] : []));
    if (unread.length) {
      const stored = unread.length < events.length ? ' (the rest of it was processed)' : '';
      reasons.push(`${unread.length === 1 ? 'an item' : `${unread.length} items`} could not be read${stored}: ${unread.join('; ')}`);
    }
    if (reasons.length) await park(d, reasons.join('; ').slice(0, 2000), { ...ctx, body }, false);
  }

  return async (d: Delivery) => {
    const count = d.headers[BATCH_HEADER];
    if (count === undefined) return handleOne(d, d.attempt);
    let items: RawItem[];
    try {
      items = decodeRawBatch(d.body, Number(count));
    } catch (err) {
      const project = d.headers[PROJECT_HEADER];
      return park(d, `a malformed batch of webhooks: ${err instanceof Error ? err.message : String(err)}`, { provider: 'unknown', projectId: project && isUuid(project) ? project : null, channelId: null });
    }
    // Together, so they share transactions as the ingress's plain messages would.
    const results = await Promise.allSettled(items.map((item) => handleOne(item, d.attempt)));
    const failed = items.filter((_, i) => results[i].status === 'rejected');
    if (failed.length === 0) return;
    // None stored: the batch goes back to the broker whole, with its retries (a redelivery finds
    // nothing done). Some stored: the others go back to the queue one by one, each then with its
    // own retries and dead-letter, and the batch is done — the stored ones are not redone.
    if (failed.length === items.length) throw (results.find((r) => r.status === 'rejected') as PromiseRejectedResult).reason;
    await deps.broker.send(Queues.inboundRaw, failed);
  };
}

/** Starts consuming the raw queue. Stopping it lets in-flight webhooks finish first. */
export async function startInboundProcessor(deps: ProcessorDeps, opts: ProcessorOptions = {}): Promise<Component> {
  keepRawDeadLetters(deps.broker, deps.db);
  const consumer: Consumer = await startConsumer(
    deps.broker,
    {
      name: PROCESSOR_NAME,
      queue: Queues.inboundRaw,
      concurrency: opts.concurrency ?? 64,
      handle: makeInboundHandler(deps, opts),
      ...(opts.retryDelaysMs && { retryDelaysMs: opts.retryDelaysMs }),
    },
    deps.logger,
  );
  return consumerComponent(PROCESSOR_NAME, consumer);
}

/**
 * The event a parse error is filed under: WAHA's `event`; for a Meta body (which has none) its
 * first change's `field` (`messages`), else its `object`.
 */
function eventTypeOf(body: unknown): string | null {
  if (!isRecord(body)) return null;
  if (typeof body.event === 'string') return body.event.slice(0, 200);
  const entry = Array.isArray(body.entry) ? body.entry[0] : undefined;
  const change = isRecord(entry) && Array.isArray(entry.changes) ? entry.changes[0] : undefined;
  if (isRecord(change) && typeof change.field === 'string') return change.field.slice(0, 200);
  return typeof body.object === 'string' ? body.object.slice(0, 200) : null;
}
