// Reads of `sessions` for the API, newest first by started_at (the sessions_list index order).
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, Where, type Page } from './keyset.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'sessions';

export type SessionRecord = {
  id: string;
  projectId: string;
  contactId: string;
  channelId: string;
  status: 'active' | 'ended';
  startedAt: Date;
  lastActivityAt: Date;
  endedAt: Date | null;
  endReason: string | null;
  timeoutMinutes: number;
  messageCount: number;
  messagesFromContact: number;
  messagesFromAgent: number;
  firstResponseSeconds: number | null;
  /** Ended: start to end. Active: start to the latest message so far (it grows with the conversation). */
  durationSeconds: number;
  /**
   * Cloud API channels: 24 hours after the contact's latest message through this channel, in any
   * session (not WhatsApp's system notices; `request_welcome`, the customer opening the chat,
   * counts) — until then Meta takes free-form replies, after it only templates. Null on WAHA
   * channels (no such window) and when the contact never wrote.
   */
  replyWindowUntil: Date | null;
};

// duration and the reply window are derived rather than stored so their values are never stale
// (the window is the newest row of the messages_contact_wrote index, migration 034, for the
// conversation: the contact's messages, not WhatsApp's system notices).
export const SESSION_COLUMNS = `id, project_id, contact_id, channel_id, status, started_at, last_activity_at, ended_at,
  end_reason, timeout_minutes, message_count, messages_from_contact, messages_from_agent, first_response_seconds,
  greatest(0, floor(extract(epoch FROM coalesce(ended_at, last_activity_at) - started_at)))::int AS duration_seconds,
  CASE WHEN (SELECT c.type FROM channels c WHERE c.id = sessions.channel_id) = 'whatsapp_cloud' THEN
    (SELECT max(m."timestamp") FROM messages m
     WHERE m.contact_id = sessions.contact_id AND m.channel_id = sessions.channel_id
       AND NOT m.from_me AND NOT (m.metadata ? 'system')) + interval '24 hours'
  END AS reply_window_until`;

export function toSession(r: Row): SessionRecord {
  return {
    id: r.id,
    projectId: r.project_id,
    contactId: r.contact_id,
    channelId: r.channel_id,
    status: r.status,
    startedAt: new Date(r.started_at),
    lastActivityAt: new Date(r.last_activity_at),
    endedAt: r.ended_at === null ? null : new Date(r.ended_at),
    endReason: r.end_reason,
    timeoutMinutes: r.timeout_minutes,
    messageCount: r.message_count,
    messagesFromContact: r.messages_from_contact,
    messagesFromAgent: r.messages_from_agent,
    firstResponseSeconds: r.first_response_seconds,
    durationSeconds: r.duration_seconds,
    replyWindowUntil: r.reply_window_until ? new Date(r.reply_window_until) : null,
  };
}

export async function findSession(q: Queryable, projectId: string, id: string): Promise<SessionRecord | undefined> {
  const r = await q.query(`SELECT ${SESSION_COLUMNS} FROM sessions WHERE project_id = $1 AND id = $2`, [projectId, id]);
  return r.rows[0] ? toSession(r.rows[0]) : undefined;
}

export type ListSessionsQuery = {
  projectId: string;
  status?: 'active' | 'ended';
  contactId?: string;
  channelId?: string;
  limit?: number;
  cursor?: string;
};

export async function listSessions(q: Queryable, query: ListSessionsQuery): Promise<Page<SessionRecord>> {
  const w = new Where();
  w.add(`project_id = ${w.param(query.projectId)}`);
  if (query.status !== undefined) w.add(`status = ${w.param(query.status)}`);
  if (query.contactId !== undefined) w.add(`contact_id = ${w.param(query.contactId)}::uuid`);
  if (query.channelId !== undefined) w.add(`channel_id = ${w.param(query.channelId)}::uuid`);
  if (query.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, query.cursor);
    w.add(`(started_at, id) < (${w.param(c.at)}::timestamptz, ${w.param(c.id)}::uuid)`);
  }
  const limit = pageSize(query.limit);
  const r = await q.query(
    `SELECT ${SESSION_COLUMNS}, ${exactTime('started_at')} AS k_at FROM sessions
     WHERE ${w.sql()}
     ORDER BY started_at DESC, id DESC
     LIMIT ${w.param(limit + 1)}`,
    w.params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (row) => ({ at: row.k_at, id: row.id }), toSession);
}

/** Full rows of the given sessions (the timeline fetches its items by id). */
export async function sessionsByIds(q: Queryable, projectId: string, ids: readonly string[]): Promise<Map<string, SessionRecord>> {
  if (ids.length === 0) return new Map();
  const r = await q.query(`SELECT ${SESSION_COLUMNS} FROM sessions WHERE project_id = $1 AND id = ANY($2::uuid[])`, [projectId, ids]);
  return new Map(r.rows.map((row) => [row.id as string, toSession(row)]));
}
