// Outbound messages (replies sent through the API): the queued row, its send schedule and lease,
// and the outcome of a send. The row in `messages` is the truth; the messages.outbound queue only
// wakes a sender. Columns of the schedule: migration 009.
import type { Queryable, Row } from './database.ts';
import { MESSAGE_COLUMNS, toMessage, type MessageRecord } from './messages-read.sql.ts';

export type NewOutboundMessage = {
  id: string;
  projectId: string;
  channelId: string;
  contactId: string;
  type: string;
  text: string | null;
  media: { url: string; mimetype: string | null; filename: string | null } | null;
  replyToExternalId: string | null;
  metadata: Record<string, unknown>;
};

/**
 * Stores a reply as queued, due now, in the conversation's active session when there is one (the
 * send re-attaches it to whichever session is active when it goes out).
 */
export async function insertOutboundMessage(tx: Queryable, m: NewOutboundMessage): Promise<MessageRecord> {
  const r = await tx.query(
    `INSERT INTO messages (id, project_id, channel_id, contact_id, session_id, direction, from_me, type, text, media, status,
       "timestamp", reply_to_external_id, metadata, next_send_at)
     VALUES ($1, $2, $3, $4,
       (SELECT id FROM sessions WHERE contact_id = $4 AND channel_id = $3 AND status = 'active'),
       'outbound', true, $5, $6, $7::jsonb, 'queued', now(), $8, $9::jsonb, now())
     RETURNING ${MESSAGE_COLUMNS}`,
    [m.id, m.projectId, m.channelId, m.contactId, m.type, m.text, m.media ? JSON.stringify(m.media) : null, m.replyToExternalId, JSON.stringify(m.metadata)],
  );
  return toMessage(r.rows[0]);
}

/** The contact of the channel's message with this provider key, when we have it. */
export async function contactOfExternalKey(q: Queryable, channelId: string, key: string): Promise<string | undefined> {
  const r = await q.query<{ contact_id: string }>('SELECT contact_id FROM messages WHERE channel_id = $1 AND external_key = $2', [channelId, key]);
  return r.rows[0]?.contact_id;
}

/** The provider id of a message of this conversation (what a reply quotes), when it has one. */
export async function externalIdOf(q: Queryable, projectId: string, channelId: string, contactId: string, messageId: string): Promise<string | null | undefined> {
  const r = await q.query('SELECT external_id FROM messages WHERE project_id = $1 AND channel_id = $2 AND contact_id = $3 AND id = $4', [projectId, channelId, contactId, messageId]);
  return r.rows[0] ? (r.rows[0].external_id as string | null) : undefined;
}

/** A queued message as the sender needs it, with where it goes. */
export type SendJob = {
  message: MessageRecord;
  attempt: number;
  phone: string | null;
  waLid: string | null;
  /** The contact was deleted after the message was queued: it must not be sent. */
  contactDeleted: boolean;
};

/**
 * No earlier reply of the same conversation (contact and channel) is still queued: replies go out
 * in the order they were queued, and a later one waits — it is neither claimed nor handed to the
 * queue (the earlier one's sender wakes it when done; the scheduler's stale rule, if that is lost).
 */
const noEarlierQueued = (m: string) =>
  `NOT EXISTS (SELECT 1 FROM messages e
               WHERE e.project_id = ${m}.project_id AND e.contact_id = ${m}.contact_id
                 AND e.channel_id = ${m}.channel_id AND e.status = 'queued'
                 AND (e.created_at, e.id) < (${m}.created_at, ${m}.id))`;

/**
 * Takes a queued, due message for sending: counts the attempt and holds a lease on it until
 * `leaseMs` from now, so another sender (a duplicate wake-up, another process) leaves it alone.
 * Undefined when it is not due, already sent or failed, held by another sender, or an earlier
 * reply of its conversation (same contact, same channel) is still queued: replies go out in the
 * order they were queued, and the earlier one's sender wakes this one when it is done with it.
 */
export async function claimForSend(q: Queryable, projectId: string, id: string, leaseMs: number): Promise<SendJob | undefined> {
  const r = await q.query(
    `WITH c AS (
       UPDATE messages SET send_attempts = send_attempts + 1, send_lease_until = now() + make_interval(secs => $3::float8 / 1000),
         enqueued_at = now(), updated_at = now()
       WHERE project_id = $1 AND id = $2 AND status = 'queued' AND next_send_at <= now()
         AND (send_lease_until IS NULL OR send_lease_until < now())
         AND ${noEarlierQueued('messages')}
       RETURNING ${MESSAGE_COLUMNS}, send_attempts
     )
     SELECT c.*, k.phone AS k_phone, k.wa_lid AS k_wa_lid, k.deleted_at IS NOT NULL AS k_deleted FROM c JOIN contacts k ON k.id = c.contact_id`,
    [projectId, id, leaseMs],
  );
  const row = r.rows[0];
  return row ? { message: toMessage(row), attempt: row.send_attempts, phone: row.k_phone, waLid: row.k_wa_lid, contactDeleted: row.k_deleted === true } : undefined;
}

/**
 * The first reply still queued and due in the conversation of message `afterId` (the one a sender
 * that just finished with that reply wakes). Undefined when there is none, or when it waits for a
 * retry (the scheduler wakes it then). The conversation is read from the message as it is now: a
 * contact merged while the reply was out (migration 023) moved it, and its queue, to the other.
 */
export async function nextQueuedInConversation(q: Queryable, c: { projectId: string; afterId: string }): Promise<{ id: string; projectId: string } | undefined> {
  const r = await q.query(
    `SELECT n.id, n.project_id, n.next_send_at <= now() AS due
     FROM messages m JOIN messages n ON n.project_id = m.project_id AND n.contact_id = m.contact_id AND n.channel_id = m.channel_id
     WHERE m.project_id = $1 AND m.id = $2 AND n.status = 'queued'
     ORDER BY n.created_at, n.id LIMIT 1`,
    [c.projectId, c.afterId],
  );
  const row = r.rows[0];
  return row?.due ? { id: row.id, projectId: row.project_id } : undefined;
}

/** Locks our queued message for recording a send; undefined when it is no longer queued. */
export async function lockQueued(tx: Queryable, id: string): Promise<MessageRecord | undefined> {
  const r = await tx.query(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE id = $1 AND status = 'queued' FOR UPDATE`, [id]);
  return r.rows[0] ? toMessage(r.rows[0]) : undefined;
}

export type EchoRow = {
  id: string;
  sessionId: string | null;
  status: string;
  sentAt: Date | null;
  deliveredAt: Date | null;
  readAt: Date | null;
  playedAt: Date | null;
  failedAt: Date | null;
  error: Record<string, unknown> | null;
  reactions: Record<string, unknown>;
  reactionsAt: Record<string, unknown>;
  revokedAt: Date | null;
};

/**
 * Another row of this channel with the same bare provider key: the provider's echo of our message,
 * stored by the inbound processor because it arrived before we knew the id. Locked for the merge.
 */
export async function lockEcho(tx: Queryable, channelId: string, key: string, ours: string): Promise<EchoRow | undefined> {
  const r = await tx.query(
    `SELECT id, session_id, status, sent_at, delivered_at, read_at, played_at, failed_at, error, reactions, reactions_at, revoked_at FROM messages
     WHERE channel_id = $1 AND external_key = $2 AND id <> $3 FOR UPDATE`,
    [channelId, key, ours],
  );
  const x: Row | undefined = r.rows[0];
  return x
    ? {
        id: x.id,
        sessionId: x.session_id,
        status: x.status,
        sentAt: x.sent_at ? new Date(x.sent_at) : null,
        deliveredAt: x.delivered_at ? new Date(x.delivered_at) : null,
        readAt: x.read_at ? new Date(x.read_at) : null,
        playedAt: x.played_at ? new Date(x.played_at) : null,
        failedAt: x.failed_at ? new Date(x.failed_at) : null,
        error: x.error ?? null,
        reactions: x.reactions ?? {},
        reactionsAt: x.reactions_at ?? {},
        revokedAt: x.revoked_at ? new Date(x.revoked_at) : null,
      }
    : undefined;
}

export async function deleteMessage(tx: Queryable, id: string): Promise<void> {
  await tx.query('DELETE FROM messages WHERE id = $1', [id]);
}

/**
 * Our message went out: its provider id, its session, status `status` (sent, or further when the
 * echo already brought acks) with the step times, and the send time as its timestamp.
 */
export async function markSent(
  tx: Queryable,
  m: {
    id: string; externalId: string | null; sessionId: string | null; status: string; at: Date;
    steps: Partial<Record<'sentAt' | 'deliveredAt' | 'readAt' | 'playedAt' | 'failedAt', Date | null>>;
    /** What the echo folded into this message already carries: reactions with their times, a deletion. */
    reactions?: Record<string, unknown>;
    reactionsAt?: Record<string, unknown>;
    revokedAt?: Date | null;
    /** The failure an echo folded into this message already carries. */
    error?: Record<string, unknown> | null;
  },
): Promise<MessageRecord> {
  const r = await tx.query(
    `UPDATE messages SET external_id = $2::text, session_id = coalesce($3::uuid, session_id), status = $4::text, "timestamp" = $5::timestamptz,
       sent_at = coalesce($6::timestamptz, $5::timestamptz), delivered_at = $7::timestamptz, read_at = $8::timestamptz, played_at = $9::timestamptz,
       failed_at = $11::timestamptz, reactions = reactions || coalesce($10::jsonb, '{}'::jsonb),
       reactions_at = reactions_at || coalesce($13::jsonb, '{}'::jsonb), revoked_at = coalesce(revoked_at, $14::timestamptz),
       send_lease_until = NULL, next_send_at = NULL, error = $12::jsonb, updated_at = now()
     WHERE id = $1
     RETURNING ${MESSAGE_COLUMNS}`,
    [
      m.id, m.externalId, m.sessionId, m.status, m.at, m.steps.sentAt ?? null, m.steps.deliveredAt ?? null, m.steps.readAt ?? null,
      m.steps.playedAt ?? null, m.reactions ? JSON.stringify(m.reactions) : null, m.steps.failedAt ?? null,
      m.error ? JSON.stringify(m.error) : null, m.reactionsAt ? JSON.stringify(m.reactionsAt) : null, m.revokedAt ?? null,
    ],
  );
  return toMessage(r.rows[0]);
}

/**
 * A reply written in a session that a person then closed before the reply went out ("reply, then
 * resolve"): the reply is counted on the session it was queued in (its agent messages, its first
 * response) instead of opening a session of its own — when a person closed it after the reply was
 * queued, it would still be active now had nobody closed it (the reply goes out before its timeout
 * from its last activity), and no session of the conversation came after it. A session that went
 * quiet, was closed before the reply was written or was followed by another is over, and the reply
 * opens a new one as before. Returns the session's id, or undefined when the reply is not counted on it.
 */
export async function countReplyOnClosedSession(
  tx: Queryable,
  m: { messageId: string; sessionId: string; contactId: string; channelId: string; at: Date },
): Promise<string | undefined> {
  const r = await tx.query(
    `UPDATE sessions s SET message_count = s.message_count + 1, messages_from_agent = s.messages_from_agent + 1,
       first_response_at = CASE WHEN s.first_response_at IS NULL AND s.first_contact_message_at <= $5::timestamptz THEN $5::timestamptz
                           ELSE s.first_response_at END,
       first_response_seconds = CASE WHEN s.first_response_at IS NULL AND s.first_contact_message_at <= $5::timestamptz
                                THEN floor(extract(epoch FROM $5::timestamptz - s.first_contact_message_at))::int ELSE s.first_response_seconds END,
       updated_at = now()
     FROM messages m
     WHERE s.id = $2 AND m.id = $1 AND s.status = 'ended' AND s.end_reason IS DISTINCT FROM 'inactivity_timeout'
       AND s.ended_at >= m.created_at AND $5::timestamptz < s.last_activity_at + make_interval(mins => s.timeout_minutes)
       AND NOT EXISTS (SELECT 1 FROM sessions a WHERE a.contact_id = $3 AND a.channel_id = $4
                         AND (a.status = 'active' OR (a.id <> s.id AND a.started_at > s.started_at)))
     RETURNING s.id`,
    [m.messageId, m.sessionId, m.contactId, m.channelId, m.at],
  );
  return r.rows[0]?.id;
}

/**
 * The advisory lock of the contact's phone, shared (as a live inbound message takes it; migration
 * 020/024's inbound_lock_phone): a message of that phone older than its session timeout, which
 * takes it exclusively, is placed wholly before or after the reply being recorded.
 */
export async function lockConversationPhone(tx: Queryable, projectId: string, contactId: string): Promise<void> {
  await tx.query(`SELECT inbound_lock_phone($1::uuid, phone, 's') FROM contacts WHERE id = $2 AND phone IS NOT NULL`, [projectId, contactId]);
}

/**
 * A reply going out counts as an interaction with the contact, as the inbound path counts its echo.
 * Takes the contact's row first, then reads the time the reply is dated with from the database's
 * clock (the sweeper's): a reply that waited for the row behind a batch while its session fell due
 * and was ended is dated after that end, not before it (which opened a session overlapping it).
 */
export async function touchContactForReply(tx: Queryable, contactId: string): Promise<Date> {
  await tx.query('SELECT 1 FROM contacts WHERE id = $1 FOR NO KEY UPDATE', [contactId]);
  const r = await tx.query<{ at: Date }>(
    `UPDATE contacts SET total_messages = total_messages + 1, last_interaction_at = greatest(last_interaction_at, t.at),
       first_interaction_at = least(first_interaction_at, t.at)
     FROM (SELECT clock_timestamp() AS at) t WHERE id = $1 RETURNING t.at`,
    [contactId],
  );
  return r.rows[0] ? new Date(r.rows[0].at) : await databaseClock(tx);
}

/** The database's clock now (not the transaction's start). */
export async function databaseClock(tx: Queryable): Promise<Date> {
  const r = await tx.query<{ at: Date }>('SELECT clock_timestamp() AS at');
  return new Date(r.rows[0].at);
}

/**
 * A failed attempt that will be tried again after `delayMs`; the lease is released. Only while the
 * attempt is still the message's latest (`attempt`, claimForSend's): a sender that outlived its
 * lease, and whose message another sender took meanwhile, must not free that one's lease (a third
 * could then send beside it).
 */
export async function scheduleRetry(q: Queryable, id: string, attempt: number, delayMs: number, error: Record<string, unknown>): Promise<void> {
  await q.query(
    `UPDATE messages SET next_send_at = now() + make_interval(secs => $2::float8 / 1000), send_lease_until = NULL,
       error = $3::jsonb, updated_at = now()
     WHERE id = $1 AND status = 'queued' AND send_attempts = $4`,
    [id, delayMs, JSON.stringify(error), attempt],
  );
}

/**
 * The message will never go: failed, with the provider's reason. Undefined if it was not queued,
 * or another sender has taken it since this attempt (`attempt`): a late failure must not undo a
 * send still under way. (A send that succeeded is recorded whoever holds the lease.)
 */
export async function markFailed(tx: Queryable, id: string, attempt: number, error: Record<string, unknown>): Promise<MessageRecord | undefined> {
  const r = await tx.query(
    `UPDATE messages SET status = 'failed', failed_at = now(), error = $2::jsonb, send_lease_until = NULL, next_send_at = NULL, updated_at = now()
     WHERE id = $1 AND status = 'queued' AND send_attempts = $3
     RETURNING ${MESSAGE_COLUMNS}`,
    [id, JSON.stringify(error), attempt],
  );
  return r.rows[0] ? toMessage(r.rows[0]) : undefined;
}

/**
 * Queued messages that need a wake-up on the queue, marked as handed over now: never handed over
 * (the API's enqueue after commit failed) once `graceMs` passed; due for a retry; or handed over
 * more than `staleMs` ago and still waiting (the queue message was lost). Any number of
 * schedulers may run: SKIP LOCKED splits the rows, and a duplicate wake-up only finds nothing to claim.
 */
export async function takeDueForQueue(
  tx: Queryable,
  o: { limit: number; graceMs: number; staleMs: number },
): Promise<Array<{ id: string; projectId: string }>> {
  const r = await tx.query(
    `WITH due AS (
       SELECT id FROM messages d
       WHERE status = 'queued' AND next_send_at <= now()
         AND (send_lease_until IS NULL OR send_lease_until < now())
         AND ${noEarlierQueued('d')}
         AND ((enqueued_at IS NULL AND created_at < now() - make_interval(secs => $2::float8 / 1000))
              OR enqueued_at < next_send_at
              OR enqueued_at < now() - make_interval(secs => $3::float8 / 1000))
       ORDER BY next_send_at LIMIT $1
       FOR UPDATE SKIP LOCKED
     )
     UPDATE messages m SET enqueued_at = now() FROM due WHERE m.id = due.id
     RETURNING m.id, m.project_id`,
    [o.limit, o.graceMs, o.staleMs],
  );
  return r.rows.map((x) => ({ id: x.id, projectId: x.project_id }));
}

/**
 * Puts a queued, due reply that no sender holds `ms` later, without spending an attempt (its
 * project had its share of the senders out). False when it was not there to put back.
 */
export async function deferSend(q: Queryable, projectId: string, id: string, ms: number): Promise<boolean> {
  const r = await q.query(
    // enqueued_at now: the scheduler hands it out again once next_send_at passes it (a reply never
    // handed out before, enqueued_at NULL, would otherwise wait for the grace of a lost wake-up).
    `UPDATE messages SET next_send_at = now() + make_interval(secs => $3::float8 / 1000), enqueued_at = now(), updated_at = now()
     WHERE project_id = $1 AND id = $2 AND status = 'queued' AND next_send_at <= now()
       AND (send_lease_until IS NULL OR send_lease_until < now()) AND ${noEarlierQueued('messages')}`,
    [projectId, id, ms],
  );
  return r.rowCount > 0;
}

/** Replies queued in every project, and the age in seconds of the oldest (0 when none). */
export async function countQueuedReplies(q: Queryable): Promise<{ count: number; oldestSeconds: number }> {
  const r = await q.query(
    `SELECT count(*)::int AS n, COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0)::float8 AS oldest FROM messages WHERE status = 'queued'`,
  );
  return { count: Number(r.rows[0].n), oldestSeconds: Math.max(0, Number(r.rows[0].oldest)) };
}

/** The earliest retry time still ahead, so a scheduler can wake for it rather than poll. */
export async function nextRetryAt(q: Queryable): Promise<Date | undefined> {
  const r = await q.query(`SELECT min(next_send_at) AS at FROM messages WHERE status = 'queued' AND next_send_at > now()`);
  return r.rows[0]?.at ? new Date(r.rows[0].at) : undefined;
}
