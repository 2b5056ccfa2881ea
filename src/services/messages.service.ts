// Messages as the API reads them (sending is a separate use case). Reads run in a tenant
// transaction so row-level security backs up the project filter.
import type { Database } from '../db/database.ts';
import { pageOf, type Page } from '../db/keyset.ts';
import { findMessage, listMessages, type MessageRecord } from '../db/messages-read.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { notFound } from '../errors.ts';

export type MessagesService = ReturnType<typeof makeMessagesService>;

export function makeMessagesService(deps: { db: Database }) {
  const { db } = deps;
  return {
    /** Newest first; filters narrow to one contact and/or one session. */
    list(
      projectId: string,
      query: { contactId?: string; sessionId?: string; limit?: number; cursor?: string },
    ): Promise<Page<MessageRecord>> {
      return withTransaction(db, (tx) => listMessages(tx, { contactId: query.contactId, sessionId: query.sessionId, ...pageOf(query), projectId, order: 'newest' }), { projectId });
    },

    get(projectId: string, id: string): Promise<MessageRecord> {
      return withTransaction(
        db,
        async (tx) => {
          const m = await findMessage(tx, projectId, id);
          if (!m) throw notFound('message');
          return m;
        },
        { projectId },
      );
    },
  };
}
