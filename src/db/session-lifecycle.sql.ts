// Ending sessions: by the inactivity sweeper (due sessions, claimed with SKIP LOCKED), by hand
// (POST /sessions/{id}/close) and with their contact (DELETE /contacts/{id}). Each ends a session
// with one UPDATE guarded by `status = 'active'`, so whichever commits first ends it and the others
// find nothing: one session.ended, never two.
import type { Queryable, Row } from './database.ts';

export type EndedSession = {
  id: string;
  projectId: string;
  contactId: string;
  channelId: string;
  startedAt: Date;
  endedAt: Date;
  endReason: string;
  closedBy: string | null;
  messageCount: number;
  messagesFromContact: number;
  messagesFromAgent: number;
  firstResponseSeconds: number | null;
  customerWaitSeconds: number | null;
  durationSeconds: number;
};

// Time the contact waited for answers: each run of contact messages waits from its first message
// to the next reply that really went out (queued or failed replies are not answers). An unanswered
// last run is not counted: how long it "waited" would only measure the timeout.
const CUSTOMER_WAIT = `(
  SELECT coalesce(floor(sum(extract(epoch FROM w.reply_at - w.ts))), 0)::int FROM (
    SELECT m.from_me, m."timestamp" AS ts,
      lag(m.from_me) OVER o AS prev_from_me,
      min(CASE WHEN m.from_me THEN m."timestamp" END) OVER (o ROWS BETWEEN CURRENT ROW AND UNBOUNDED FOLLOWING) AS reply_at
    FROM messages m
    WHERE m.session_id = s.id AND (NOT m.from_me OR m.status NOT IN ('queued', 'failed'))
    WINDOW o AS (ORDER BY m."timestamp", m.id)
  ) w
  WHERE NOT w.from_me AND (w.prev_from_me IS NULL OR w.prev_from_me) AND w.reply_at IS NOT NULL)`;

const ENDED_COLUMNS = `s.id, s.project_id, s.contact_id, s.channel_id, s.started_at, s.ended_at, s.end_reason, s.closed_by,
  s.message_count, s.messages_from_contact, s.messages_from_agent, s.first_response_seconds, s.customer_wait_seconds,
  greatest(0, floor(extract(epoch FROM s.ended_at - s.started_at)))::int AS duration_seconds`;

function toEnded(r: Row): EndedSession {
  return {
    id: r.id,
    projectId: r.project_id,
    contactId: r.contact_id,
    channelId: r.channel_id,
    startedAt: new Date(r.started_at),
    endedAt: new Date(r.ended_at),
    endReason: r.end_reason,
    closedBy: r.closed_by,
    messageCount: r.message_count,
    messagesFromContact: r.messages_from_contact,
    messagesFromAgent: r.messages_from_agent,
    firstResponseSeconds: r.first_response_seconds,
    customerWaitSeconds: r.customer_wait_seconds,
    durationSeconds: r.duration_seconds,
  };
}

/**
 * Ends up to `limit` active sessions whose due time has passed at `now`, oldest due first. Rows
 * another sweeper (or an inbound message pushing the due time) holds are skipped, not waited for;
 * a row updated since this statement's snapshot is re-checked against `due_at` before it is ended.
 * The session ends at its due time, not at the sweep: one due while every process was down ends
 * when it should have. Must run inside the transaction that appends the session.ended events.
 */
export async function endDueSessions(tx: Queryable, now: Date | null, limit: number): Promise<EndedSession[]> {
  const r = await tx.query(
    `WITH due AS (
       SELECT id FROM sessions
       WHERE status = 'active' AND due_at <= coalesce($1::timestamptz, now())
       ORDER BY due_at
       LIMIT $2
       FOR UPDATE SKIP LOCKED
     )
     UPDATE sessions s SET status = 'ended', ended_at = s.due_at, end_reason = 'inactivity_timeout', due_at = NULL,
       customer_wait_seconds = ${CUSTOMER_WAIT}, updated_at = now()
     FROM due WHERE s.id = due.id
     RETURNING ${ENDED_COLUMNS}`,
    [now, limit],
  );
  return r.rows.map(toEnded);
}

export type CloseOutcome = { ended: EndedSession } | { already: 'ended' } | { missing: true };

/**
 * Ends one active session of the project now, for `reason`. One already past its due time (the
 * sweeper had not got to it: workers stopped, or behind) ended then, when the conversation went
 * quiet: its end is its due time, as the sweeper's would be, so its duration and the contact's
 * session time do not grow by the hours nobody wrote, and a late message after that time opens a
 * session of its own. The person's reason stands.
 */
export async function endSessionNow(
  tx: Queryable,
  s: { projectId: string; id: string; reason: string; closedBy: string | null; now: Date | null },
): Promise<CloseOutcome> {
  const [ended] = await endActiveNow(tx, 's.id = $6', [s.id], s);
  if (ended) return { ended };
  const seen = await tx.query('SELECT status FROM sessions WHERE project_id = $1 AND id = $2', [s.projectId, s.id]);
  return seen.rows[0] ? { already: 'ended' } : { missing: true };
}

/**
 * Ends every active session of a contact now (one per channel at most), as endSessionNow ends
 * one: the contact was deleted, and a conversation with nobody in it is over. One already past its
 * due time (the sweeper had not got to it) timed out, and ends as the sweeper would have ended it.
 */
export function endContactSessionsNow(
  tx: Queryable,
  s: { projectId: string; contactId: string; reason: string; closedBy: string | null; now: Date | null },
): Promise<EndedSession[]> {
  return endActiveNow(tx, 's.contact_id = $6', [s.contactId], { ...s, overdueTimedOut: true });
}

/**
 * Two contacts about to become one (a LID-only contact merged into its phone's): where both have
 * an active session on a channel, the one that went quiet first ends now (`contact_merged`; the
 * LID-only contact's on a tie), as endContactSessionsNow ends a deleted contact's. One contact
 * keeps at most one active session per channel.
 */
export function endSessionsBeforeMerge(
  tx: Queryable,
  s: { projectId: string; fromContactId: string; intoContactId: string; now: Date | null },
): Promise<EndedSession[]> {
  return endActiveNow(
    tx,
    `s.contact_id IN ($6, $7) AND EXISTS (
       SELECT 1 FROM sessions o WHERE o.project_id = $1 AND o.status = 'active' AND o.channel_id = s.channel_id
         AND o.contact_id IN ($6, $7) AND o.contact_id <> s.contact_id
         AND (o.last_activity_at > s.last_activity_at OR (o.last_activity_at = s.last_activity_at AND s.contact_id = $6)))`,
    [s.fromContactId, s.intoContactId],
    { ...s, reason: 'contact_merged', closedBy: null, overdueTimedOut: true },
  );
}

/** Ends the project's active sessions that `where` (over `s.`, parameters from $6) picks. */
async function endActiveNow(
  tx: Queryable,
  where: string,
  args: readonly unknown[],
  s: { projectId: string; reason: string; closedBy: string | null; now: Date | null; overdueTimedOut?: boolean },
): Promise<EndedSession[]> {
  const timedOut = `($5::boolean AND s.due_at <= coalesce($4::timestamptz, now()))`;
  const r = await tx.query(
    `UPDATE sessions s SET status = 'ended',
       -- Never before its last message: one placed while this waited for the row (its time is
       -- after this transaction's start), or dated a little ahead by the provider's clock.
       ended_at = greatest(least(coalesce($4::timestamptz, now()), coalesce(s.due_at, 'infinity'::timestamptz)), s.started_at, s.last_activity_at),
       end_reason = CASE WHEN ${timedOut} THEN 'inactivity_timeout' ELSE $2 END,
       closed_by = CASE WHEN ${timedOut} THEN NULL ELSE $3 END,
       due_at = NULL, customer_wait_seconds = ${CUSTOMER_WAIT}, updated_at = now()
     WHERE s.project_id = $1 AND s.status = 'active' AND ${where}
     RETURNING ${ENDED_COLUMNS}`,
    [s.projectId, s.reason, s.closedBy, s.now, s.overdueTimedOut === true, ...args],
  );
  return r.rows.map(toEnded);
}

/**
 * For the inbound transaction, before it counts a message on the conversation's active session:
 * ends that session first when the message comes after its due time (the sweeper had not got to
 * it yet — a backlog after a restart), so the message opens a new session instead of reviving one
 * that should be over. Never before the clock says so (a message dated ahead does not end a session
 * early), as inbound_store_messages() checks (035); the clock is read later than the function's,
 * so every session it reported overdue is ended here. A reply passes the clock itself. Returns the
 * ended session (its session.ended is the caller's to append).
 */
export async function endOverdueSession(tx: Queryable, c: { contactId: string; channelId: string; at: Date }): Promise<EndedSession | undefined> {
  const r = await tx.query(
    `UPDATE sessions s SET status = 'ended', ended_at = s.due_at, end_reason = 'inactivity_timeout', due_at = NULL,
       customer_wait_seconds = ${CUSTOMER_WAIT}, updated_at = now()
     WHERE s.contact_id = $1 AND s.channel_id = $2 AND s.status = 'active' AND s.due_at <= LEAST($3::timestamptz, clock_timestamp())
     RETURNING ${ENDED_COLUMNS}`,
    [c.contactId, c.channelId, c.at],
  );
  return r.rows[0] ? toEnded(r.rows[0]) : undefined;
}

/**
 * Sessions already over that late messages were just counted in (migration 015): their customer
 * wait is computed again with those messages. Returns them as ended, for the caller to send the
 * session.ended of those it opened for the late messages.
 */
export async function settleLateSessions(tx: Queryable, ids: readonly string[]): Promise<EndedSession[]> {
  const r = await tx.query(
    `UPDATE sessions s SET customer_wait_seconds = ${CUSTOMER_WAIT}, updated_at = now()
     WHERE s.id = ANY($1::uuid[]) AND s.status = 'ended'
     RETURNING ${ENDED_COLUMNS}`,
    [ids],
  );
  return r.rows.map(toEnded);
}

/** Active sessions across all projects (the sessions_active gauge); uses the partial index. */
export async function countActiveSessions(q: Queryable): Promise<number> {
  const r = await q.query<{ n: number }>(`SELECT count(*)::int AS n FROM sessions WHERE status = 'active'`);
  return Number(r.rows[0].n);
}

/**
 * The contact's conversation totals after one of its sessions ended (the session.ended consumer;
 * it runs once per event, so the additions are not repeated on redelivery). A contact merged
 * into another since (migration 023) has its totals there: the addition goes there too.
 */
export async function addEndedSessionToContact(
  tx: Queryable,
  e: { projectId: string; contactId: string; durationSeconds: number; endedAt: Date },
): Promise<boolean> {
  const add = `UPDATE contacts SET ended_sessions = ended_sessions + 1, total_session_seconds = total_session_seconds + $3,
       last_session_ended_at = greatest(last_session_ended_at, $4::timestamptz)`;
  const params = [e.projectId, e.contactId, Math.max(0, Math.trunc(e.durationSeconds)), e.endedAt];
  // Not merged: there. A merge committing meanwhile is waited for, and then this finds the row
  // merged: the next statement (a snapshot after that commit) follows it.
  const r = await tx.query(`${add} WHERE project_id = $1 AND id = $2 AND merged_into IS NULL`, params);
  if (r.rowCount > 0) return true;
  const merged = await tx.query(`${add} WHERE project_id = $1 AND id = (SELECT merged_into FROM contacts WHERE project_id = $1 AND id = $2)`, params);
  return merged.rowCount > 0;
}
