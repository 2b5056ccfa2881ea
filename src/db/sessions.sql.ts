// Writes to `sessions` shared by the inbound and outbound paths. The read API keeps its queries in
// sessions-read.sql.ts; ending sessions lives in session-lifecycle.sql.ts.
import type { Queryable } from './database.ts';

export type TouchedSession = {
  id: string;
  /** This message opened the session. */
  inserted: boolean;
  startedAt: Date;
  timeoutMinutes: number;
};

export type TouchSessionInput = {
  newId: string;
  projectId: string;
  contactId: string;
  channelId: string;
  /** Provider time of the message. */
  at: Date;
  fromMe: boolean;
  /** Used when the message opens a session. */
  timeoutMinutes: number;
};

/**
 * Counts one message on the conversation's active session, or opens one with it: the database
 * function touch_active_session() (migration 006), which inbound_store_messages() runs per message
 * too, so both paths count the same way.
 */
export async function touchActiveSession(tx: Queryable, s: TouchSessionInput): Promise<TouchedSession> {
  const r = await tx.query(`SELECT * FROM touch_active_session($1::uuid, $2::uuid, $3::uuid, $4::uuid, $5::timestamptz, $6::boolean, $7::int)`, [
    s.newId, s.projectId, s.contactId, s.channelId, s.at, s.fromMe, s.timeoutMinutes,
  ]);
  const row = r.rows[0];
  return { id: row.id, inserted: row.inserted === true, startedAt: new Date(row.started_at), timeoutMinutes: row.timeout_minutes };
}
