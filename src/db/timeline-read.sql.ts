// A contact's timeline: their messages, session starts and session ends merged into one stream,
// newest first. One keyset over the union (time, rank, id) pages through all kinds at once — each
// kind reads a page of its own from the cursor on, the union keeps the newest — then the page's
// rows are fetched whole by id (one query per kind, never one per item).
import type { Queryable } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, type Page } from './keyset.ts';
import { messagesByIds, type MessageRecord } from './messages-read.sql.ts';
import { sessionsByIds, type SessionRecord } from './sessions-read.sql.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'timeline';

export type TimelineEntry =
  | { type: 'message'; at: Date; message: MessageRecord }
  | { type: 'session_started'; at: Date; session: SessionRecord }
  | { type: 'session_ended'; at: Date; session: SessionRecord };

export type TimelineType = TimelineEntry['type'];

// Rank orders kinds that share an instant the way they happened: a session starts before its first
// message and ends after its last one, so newest first reads ended, message, started.
// A new kind (pipeline status changes) is one more branch here, one more fetch below.
const BRANCHES = [
  { rank: 2, at: '"timestamp"', select: `SELECT 'message'::text AS type, 2 AS rank, "timestamp" AS at, id FROM messages WHERE project_id = $1 AND contact_id = $2` },
  { rank: 1, at: 'started_at', select: `SELECT 'session_started'::text, 1, started_at, id FROM sessions WHERE project_id = $1 AND contact_id = $2` },
  { rank: 3, at: 'ended_at', select: `SELECT 'session_ended'::text, 3, ended_at, id FROM sessions WHERE project_id = $1 AND contact_id = $2 AND ended_at IS NOT NULL` },
];

type Ref = { type: TimelineType; rank: number; id: string; k_at: string };

/**
 * The keyset `(at, rank, id) < cursor` within one branch, whose rank is fixed: written on its own
 * columns, so that each branch reads its own index from the cursor on (messages_contact for a
 * contact's messages) and stops after a page, instead of the union being read whole and sorted.
 */
function branchAfter(branch: (typeof BRANCHES)[number], cursorRank: number, idRef: () => string): string {
  if (branch.rank < cursorRank) return ` AND ${branch.at} <= $3::timestamptz`;
  if (branch.rank > cursorRank) return ` AND ${branch.at} < $3::timestamptz`;
  return ` AND (${branch.at}, id) < ($3::timestamptz, ${idRef()}::uuid)`;
}

export async function listTimeline(
  q: Queryable,
  query: { projectId: string; contactId: string; limit?: number; cursor?: string },
): Promise<Page<TimelineEntry>> {
  const params: unknown[] = [query.projectId, query.contactId];
  let after: (b: (typeof BRANCHES)[number]) => string = () => '';
  if (query.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, query.cursor);
    params.push(c.at);
    // The id is a parameter only when a branch compares it (one may not, for a rank of 0): an
    // unused parameter has no type PostgreSQL can infer.
    let idRef: string | undefined;
    const ref = () => (idRef ??= `$${params.push(c.id)}`);
    after = (b) => branchAfter(b, c.rank ?? 0, ref);
  }
  const limit = pageSize(query.limit);
  const conditions = BRANCHES.map(after);
  params.push(limit + 1);
  const take = `$${params.length}`;
  const branches = BRANCHES.map((b, i) => `(${b.select}${conditions[i]} ORDER BY ${b.at} DESC, id DESC LIMIT ${take})`);
  const r = await q.query<Ref>(
    `SELECT type, rank, id, ${exactTime('at')} AS k_at
     FROM (${branches.join('\n UNION ALL ')}) AS items
     ORDER BY at DESC, rank DESC, id DESC
     LIMIT ${take}`,
    params,
  );

  const refs = r.rows.slice(0, limit);
  const messageIds = refs.filter((x) => x.type === 'message').map((x) => x.id);
  const sessionIds = [...new Set(refs.filter((x) => x.type !== 'message').map((x) => x.id))];
  const messages = await messagesByIds(q, query.projectId, messageIds);
  const sessions = await sessionsByIds(q, query.projectId, sessionIds);

  // A row the page named may be gone by the time it is fetched (another transaction committed
  // between the two reads: a WAHA echo folded into the reply it echoes is deleted): it is left out
  // of the page, which the cursor still continues after.
  const page = toPage(
    r.rows,
    limit,
    CURSOR_LIST,
    (x) => ({ at: x.k_at, id: x.id, rank: x.rank }),
    (x): TimelineEntry | undefined => {
      if (x.type === 'message') {
        const message = messages.get(x.id);
        return message && { type: 'message', at: message.timestamp, message };
      }
      const session = sessions.get(x.id);
      if (!session) return undefined;
      return x.type === 'session_started'
        ? { type: 'session_started', at: session.startedAt, session }
        : { type: 'session_ended', at: session.endedAt!, session };
    },
  );
  return { ...page, rows: page.rows.filter((e): e is TimelineEntry => e !== undefined) };
}
