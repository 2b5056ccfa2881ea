// Paginated reads of `parse_errors` for the admin API (parse-errors.sql.ts holds the writes).
import type { Queryable, Row } from './database.ts';
import { LIST_BODY_BYTES, toBuffer } from '../broker/dead-letters.sql.ts';
import { decodeCursor, exactTime, pageSize, toPage, type Page } from './keyset.ts';
import type { ParseErrorRecord } from './parse-errors.sql.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'parse-errors';

function toParseError(r: Row): ParseErrorRecord & { bodySize: number } {
  return {
    id: r.id,
    projectId: r.project_id,
    channelId: r.channel_id,
    provider: r.provider,
    eventType: r.event_type ?? null,
    reason: r.reason,
    body: toBuffer(r.body),
    bodySize: Number(r.body_size),
    headers: r.headers ?? {},
    createdAt: new Date(r.created_at),
    replayedAt: r.replayed_at ? new Date(r.replayed_at) : null,
    replayCount: r.replay_count ?? 0,
  };
}

/** The project's parse errors, newest first, keyset-paginated on (created_at, id). */
export async function listParseErrorsPage(
  q: Queryable,
  f: { projectId: string; channelId?: string; limit?: number; cursor?: string },
): Promise<Page<ParseErrorRecord & { bodySize: number }>> {
  const limit = pageSize(f.limit);
  const params: unknown[] = [f.projectId, limit + 1];
  const where = ['project_id = $1'];
  if (f.channelId !== undefined) {
    params.push(f.channelId);
    where.push(`channel_id = $${params.length}`);
  }
  if (f.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, f.cursor);
    params.push(c.at, c.id);
    where.push(`(created_at, id) < ($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
  }
  const r = await q.query(
    `SELECT id, project_id, channel_id, provider, event_type, reason, substring(body from 1 for ${LIST_BODY_BYTES}) AS body,
            octet_length(body) AS body_size, headers, created_at, replayed_at, replay_count, ${exactTime('created_at')} AS cursor_at
     FROM parse_errors WHERE ${where.join(' AND ')} ORDER BY created_at DESC, id DESC LIMIT $2`,
    params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (x) => ({ at: x.cursor_at, id: x.id }), toParseError);
}

/** One of the project's parse errors, its body whole. */
export async function getParseError(q: Queryable, projectId: string, id: string): Promise<(ParseErrorRecord & { bodySize: number }) | undefined> {
  const r = await q.query(
    `SELECT id, project_id, channel_id, provider, event_type, reason, body, octet_length(body) AS body_size, headers, created_at, replayed_at, replay_count
     FROM parse_errors WHERE project_id = $1 AND id = $2`,
    [projectId, id],
  );
  return r.rows[0] ? toParseError(r.rows[0]) : undefined;
}
