// Conversation sessions as the API reads them. Sessions are opened and closed by the inbound
// processor and the inactivity sweeper; this service only reads, inside a tenant transaction.
import type { Database } from '../db/database.ts';
import { pageOf, type Page } from '../db/keyset.ts';
import { listMessages, type MessageRecord } from '../db/messages-read.sql.ts';
import { findSession, listSessions, type ListSessionsQuery, type SessionRecord } from '../db/sessions-read.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { notFound } from '../errors.ts';

export type SessionsService = ReturnType<typeof makeSessionsService>;

export function makeSessionsService(deps: { db: Database }) {
  const { db } = deps;
  return {
    list(projectId: string, query: Omit<ListSessionsQuery, 'projectId'>): Promise<Page<SessionRecord>> {
      return withTransaction(db, (tx) => listSessions(tx, { ...query, projectId }), { projectId });
    },

    get(projectId: string, id: string): Promise<SessionRecord> {
      return withTransaction(
        db,
        async (tx) => {
          const s = await findSession(tx, projectId, id);
          if (!s) throw notFound('session');
          return s;
        },
        { projectId },
      );
    },

    /** The conversation in the order it was said: oldest first by the provider's timestamp. */
    messages(projectId: string, sessionId: string, query: { limit?: number; cursor?: string }): Promise<Page<MessageRecord>> {
      return withTransaction(
        db,
        async (tx) => {
          if (!(await findSession(tx, projectId, sessionId))) throw notFound('session');
          return listMessages(tx, { ...pageOf(query), projectId, sessionId, order: 'oldest' });
        },
        { projectId },
      );
    },
  };
}
