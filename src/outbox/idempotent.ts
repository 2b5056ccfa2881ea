// Idempotent consumption. Brokers deliver at least once (a relay that dies between publish and
// mark publishes again; a consumer that dies before its ack gets the message again), so every
// consumer records (consumer, event_id) in the SAME transaction as its effect: either both commit
// or neither does, and a second delivery finds the row and does nothing.
import type { Database, Queryable } from '../db/database.ts';
import { withTransaction, type TxOptions } from '../db/transaction.ts';
import type { Delivery } from '../broker/broker.ts';
import { isEventType, type EventEnvelope } from '../domain/events.ts';
import { isUuid } from '../domain/ids.ts';
import type { Logger } from '../observability/logger.ts';

/**
 * Runs `fn` once per (consumer, eventId), in one transaction with the processed_events marker.
 * Returns true when it applied the effect, false when the event had already been handled.
 *
 * The marker is inserted FIRST: a concurrent duplicate blocks on the unique key until this
 * transaction ends, then sees the row (skip) — or, if this one rolled back, inserts it and applies.
 */
export async function handleOnce(
  db: Database,
  consumer: string,
  eventId: string,
  fn: (tx: Queryable) => Promise<void>,
  txOpts?: TxOptions,
): Promise<boolean> {
  return withTransaction(
    db,
    async (tx) => {
      const r = await tx.query(
        `INSERT INTO processed_events (consumer, event_id) VALUES ($1, $2::uuid)
         ON CONFLICT (consumer, event_id) DO NOTHING RETURNING 1 AS ok`,
        [consumer, eventId],
      );
      if (r.rows.length === 0) return false;
      await fn(tx);
      return true;
    },
    txOpts,
  );
}

/** A message on `domain.events` that is not a well-formed event envelope. Retrying cannot help. */
export class MalformedEventError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'MalformedEventError';
  }
}

/**
 * Decodes a delivery from `domain.events` into its envelope, checking the fields consumers rely
 * on. The message id must be the event id (a mismatch is a bug upstream). The routing key is not
 * checked: a retry path may legitimately re-route the message (wait queue → queue).
 */
export function parseEventMessage(delivery: Pick<Delivery, 'body' | 'messageId'>): EventEnvelope {
  let body: any;
  try {
    body = JSON.parse(delivery.body.toString('utf8'));
  } catch {
    throw new MalformedEventError(`message ${delivery.messageId} is not JSON`);
  }
  const problems: string[] = [];
  if (!body || typeof body !== 'object') throw new MalformedEventError(`message ${delivery.messageId} is not an object`);
  if (!isUuid(body.id)) problems.push('id is not a UUID');
  if (!isEventType(body.type)) problems.push(`type "${String(body.type)}" is not in the catalogue`);
  if (!Number.isInteger(body.version)) problems.push('version is not an integer');
  if (typeof body.occurred_at !== 'string' || Number.isNaN(Date.parse(body.occurred_at))) problems.push('occurred_at is not a date');
  if (typeof body.aggregate_id !== 'string') problems.push('aggregate_id is missing');
  if (typeof body.aggregate_type !== 'string') problems.push('aggregate_type is missing');
  if (body.project_id !== null && !isUuid(body.project_id)) problems.push('project_id is not a UUID');
  if (!body.data || typeof body.data !== 'object') problems.push('data is not an object');
  if (delivery.messageId && isUuid(body.id) && delivery.messageId !== body.id) problems.push('message id differs from the event id');
  if (problems.length > 0) throw new MalformedEventError(`message ${delivery.messageId}: ${problems.join('; ')}`);
  return body as EventEnvelope;
}

/**
 * The event, or undefined for a message that is no event envelope: retrying cannot fix it, so a
 * consumer acknowledges it at once (with a warning saying why) instead of sending it through every
 * retry into the dead letters, where a replay would only fail again.
 */
export function parseEventOrSkip(delivery: Pick<Delivery, 'body' | 'messageId'>, log: Pick<Logger, 'warn'>): EventEnvelope | undefined {
  try {
    return parseEventMessage(delivery);
  } catch (err) {
    if (!(err instanceof MalformedEventError)) throw err;
    // The message id is the event's id: the relay publishes each event under it.
    log.warn({ message_id: delivery.messageId, reason: err.message }, 'malformed event acknowledged without effect');
    return undefined;
  }
}

/** The message the relay publishes for an event: body = envelope JSON, message id = event id. */
export function eventMessageBody(e: EventEnvelope): Buffer {
  return Buffer.from(JSON.stringify(e));
}
