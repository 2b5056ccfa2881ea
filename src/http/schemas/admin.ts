// Wire shapes of the admin views (queues, dead letters, parse errors) and of the event log.
import { Type, type Static } from '@sinclair/typebox';
import type { DeadLetter } from '../../broker/dead-letters.sql.ts';
import type { ParseErrorRecord } from '../../db/parse-errors.sql.ts';
import { EVENT_TYPES } from '../../domain/events.ts';
import type { StoredEvent } from '../../outbox/outbox.sql.ts';
import type { QueueView } from '../../services/admin.service.ts';
import { FreeObject, iso, isoOrNull, ListQuery, Nullable, Timestamp, Uuid } from './common.ts';

export const QueueInfo = Type.Object(
  {
    queue: Type.String(),
    depth: Type.Integer({ description: 'Messages ready or in flight (all projects: queues are shared infrastructure)' }),
    retrying: Type.Integer({ description: 'Messages waiting for a retry (all projects)' }),
    consumers: Type.Integer(),
    dead_letters: Type.Integer({ description: "Dead letters of your project's messages" }),
  },
  { title: 'QueueInfo' },
);

export const QueueList = Type.Object({ data: Type.Array(QueueInfo), next_cursor: Nullable(Type.String()) });

const BodyEncoding = Type.Unsafe<'utf8' | 'base64'>({ type: 'string', enum: ['utf8', 'base64'] });

export const DeadLetterSchema = Type.Object(
  {
    id: Uuid,
    queue: Type.String(),
    message_id: Type.String(),
    routing_key: Type.String(),
    headers: FreeObject(),
    body: Type.String({ description: 'The message body: text when it is UTF-8, else base64 (see body_encoding); in a list, its first 64 KiB (see body_truncated)' }),
    body_encoding: BodyEncoding,
    body_size: Type.Integer({ description: 'The whole body, in bytes' }),
    body_truncated: Type.Boolean({ description: 'The list shows the first 64 KiB only: GET /admin/dead-letters/{id} has it whole' }),
    error: Type.String(),
    attempts: Type.Integer(),
    created_at: Timestamp,
    replayed_at: Nullable(Timestamp),
    replay_count: Type.Integer(),
  },
  { title: 'DeadLetter' },
);

export const ParseErrorSchema = Type.Object(
  {
    id: Uuid,
    channel_id: Nullable(Uuid),
    provider: Type.String(),
    event_type: Nullable(Type.String()),
    reason: Type.String(),
    body: Type.String({ description: 'The raw payload: text when it is UTF-8, else base64 (see body_encoding); in a list, its first 64 KiB (see body_truncated)' }),
    body_encoding: BodyEncoding,
    body_size: Type.Integer({ description: 'The whole payload, in bytes' }),
    body_truncated: Type.Boolean({ description: 'The list shows the first 64 KiB only: GET /admin/parse-errors/{id} has it whole' }),
    headers: FreeObject(),
    created_at: Timestamp,
    replayed_at: Nullable(Timestamp),
    replay_count: Type.Integer(),
  },
  { title: 'ParseError' },
);

export const EventSchema = Type.Object(
  {
    id: Uuid,
    type: Type.String(),
    version: Type.Integer(),
    occurred_at: Timestamp,
    project_id: Uuid,
    aggregate_type: Type.String(),
    aggregate_id: Type.String(),
    data: FreeObject('The event payload (contract §3)'),
    published_at: Timestamp,
  },
  { title: 'Event' },
);

export const DeadLetterQuery = ListQuery({ queue: Type.Optional(Type.String({ maxLength: 200 })) });
export const ParseErrorQuery = ListQuery({ channel_id: Type.Optional(Uuid) });
export const EventQuery = ListQuery({
  type: Type.Optional(Type.Unsafe<string>({ type: 'string', enum: [...EVENT_TYPES] })),
  aggregate_id: Type.Optional(Type.String({ maxLength: 200 })),
  since: Type.Optional(Timestamp),
  until: Type.Optional(Timestamp),
});

/**
 * Raw bytes for JSON: as text when they are valid UTF-8, else base64. `size` is the whole body's
 * length when `b` is its beginning only: a character cut at that edge is left out, so that text
 * stays text.
 */
function presentBytes(b: Buffer, size = b.length): { body: string; body_encoding: 'utf8' | 'base64'; body_size: number; body_truncated: boolean } {
  const truncated = size > b.length;
  const whole = { body_size: size, body_truncated: truncated };
  for (let cut = 0; cut <= (truncated ? 3 : 0) && cut <= b.length; cut++) {
    try {
      return { body: new TextDecoder('utf-8', { fatal: true }).decode(b.subarray(0, b.length - cut)), body_encoding: 'utf8', ...whole };
    } catch {
      // not UTF-8 (or cut inside a character: one byte fewer)
    }
  }
  return { body: b.toString('base64'), body_encoding: 'base64', ...whole };
}

export const presentQueue = (q: QueueView): Static<typeof QueueInfo> => ({
  queue: q.queue,
  depth: q.depth,
  retrying: q.retrying,
  consumers: q.consumers,
  dead_letters: q.deadLetters,
});

export const presentDeadLetter = (d: DeadLetter): Static<typeof DeadLetterSchema> => ({
  id: d.id,
  queue: d.queue,
  message_id: d.messageId,
  routing_key: d.routingKey,
  headers: d.headers,
  ...presentBytes(d.body, d.bodySize),
  error: d.error,
  attempts: d.attempts,
  created_at: iso(d.createdAt),
  replayed_at: isoOrNull(d.replayedAt),
  replay_count: d.replayCount,
});

export const presentParseError = (p: ParseErrorRecord & { bodySize?: number }): Static<typeof ParseErrorSchema> => ({
  id: p.id,
  channel_id: p.channelId,
  provider: p.provider,
  event_type: p.eventType,
  reason: p.reason,
  ...presentBytes(p.body, p.bodySize),
  headers: p.headers,
  created_at: iso(p.createdAt),
  replayed_at: isoOrNull(p.replayedAt),
  replay_count: p.replayCount,
});

export const presentEvent = (e: StoredEvent): Static<typeof EventSchema> => ({
  id: e.id,
  type: e.type,
  version: e.version,
  occurred_at: e.occurred_at,
  project_id: e.project_id,
  aggregate_type: e.aggregate_type,
  aggregate_id: e.aggregate_id,
  data: e.data as Record<string, unknown>,
  published_at: e.published_at,
});
