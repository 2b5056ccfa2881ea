// How a session ends: by inactivity (the sweeper) or by a person (POST /sessions/{id}/close). Each
// end commits with its session.ended event, in one transaction.
import type { Database } from '../db/database.ts';
import { endDueSessions, endSessionNow, type EndedSession } from '../db/session-lifecycle.sql.ts';
import { findSession, type SessionRecord } from '../db/sessions-read.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { newEvent, type EventEnvelope, type SessionEndReason } from '../domain/events.ts';
import type { Caller } from '../domain/permissions.ts';
import { AppError, notFound } from '../errors.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';

/** Reasons a person may give; `inactivity_timeout` belongs to the sweeper. */
export const MANUAL_END_REASONS = ['resolved', 'closed_by_agent', 'spam', 'transferred', 'other'] as const satisfies readonly SessionEndReason[];
export type ManualEndReason = (typeof MANUAL_END_REASONS)[number];

/** The session.ended event of an ended session, dated when it ended. */
export function sessionEndedEvent(s: EndedSession): EventEnvelope<'session.ended'> {
  return newEvent('session.ended', {
    projectId: s.projectId,
    aggregateId: s.id,
    occurredAt: s.endedAt,
    data: {
      session_id: s.id,
      contact_id: s.contactId,
      channel_id: s.channelId,
      reason: s.endReason as SessionEndReason,
      started_at: s.startedAt.toISOString(),
      ended_at: s.endedAt.toISOString(),
      closed_by: s.closedBy,
      message_count: s.messageCount,
      messages_from_contact: s.messagesFromContact,
      messages_from_agent: s.messagesFromAgent,
      first_response_seconds: s.firstResponseSeconds,
      customer_wait_seconds: s.customerWaitSeconds,
      duration_seconds: s.durationSeconds,
    },
  });
}

/** How a caller is named in `closed_by` and in pipeline history. */
export function actorOf(caller: Caller): { type: 'user' | 'api_key'; id: string | null; label: string } {
  if (caller.kind === 'user' && caller.userId) return { type: 'user', id: caller.userId, label: `user:${caller.userId}` };
  const id = caller.apiKeyId ?? null;
  return { type: 'api_key', id, label: `api_key:${id ?? 'unknown'}` };
}

export type SessionLifecycle = ReturnType<typeof makeSessionLifecycle>;

export function makeSessionLifecycle(deps: { db: Database; now?: () => Date }) {
  const { db } = deps;
  return {
    /**
     * Ends the sessions due at `now` (at most `limit`), across all projects, with their events.
     * Returns how many ended; the caller loops while a full batch comes back.
     */
    async endDue(limit: number): Promise<EndedSession[]> {
      const ended = await withTransaction(db, async (tx) => {
        const rows = await endDueSessions(tx, deps.now?.() ?? null, limit);
        await appendEvents(tx, rows.map(sessionEndedEvent));
        return rows;
      });
      return ended;
    },

    /** Ends an active session of the caller's project now. An ended one is a 409; another project's, 404. */
    async close(caller: Caller, id: string, reason: ManualEndReason): Promise<SessionRecord> {
      const projectId = caller.projectId;
      const session = await withTransaction(
        db,
        async (tx) => {
          const out = await endSessionNow(tx, { projectId, id, reason, closedBy: actorOf(caller).label, now: deps.now?.() ?? null });
          if ('missing' in out) throw notFound('session');
          if ('already' in out) throw new AppError('already_ended', 'this session has already ended; a new message opens a new one');
          await appendEvents(tx, [sessionEndedEvent(out.ended)]);
          const s = await findSession(tx, projectId, id);
          if (!s) throw notFound('session');
          return s;
        },
        { projectId },
      );
      return session;
    },
  };
}
