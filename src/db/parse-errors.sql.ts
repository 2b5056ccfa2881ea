// Provider payloads the inbound processor could not understand, parked with the raw body and the
// reason so an operator can see (and a fix can replay) them. Written in the project's tenant
// transaction when the channel is known; without a project otherwise.
import type { Queryable } from './database.ts';
import { pruneOlderThan } from './prune.ts';
import type { Headers } from '../broker/broker.ts';

export type NewParseError = {
  id: string;
  projectId: string | null;
  channelId: string | null;
  provider: string;
  eventType: string | null;
  reason: string;
  body: Buffer;
  headers: Headers;
};

export async function insertParseError(q: Queryable, e: NewParseError): Promise<void> {
  await q.query(
    `INSERT INTO parse_errors (id, project_id, channel_id, provider, event_type, reason, body, headers)
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8::jsonb)`,
    [e.id, e.projectId, e.channelId, e.provider, e.eventType, e.reason.slice(0, 2000), e.body, JSON.stringify(e.headers)],
  );
}

export type ParseErrorRecord = NewParseError & { createdAt: Date; replayedAt: Date | null; replayCount: number };

/**
 * Marks a replay of the project's parse error, if its replay count is still `seen` (two replays
 * at once: one marks, the other finds it marked). The row as marked, or undefined.
 */
export async function markParseErrorReplay(q: Queryable, projectId: string, id: string, seen: number): Promise<{ replayedAt: Date; replayCount: number } | undefined> {
  const r = await q.query<{ replayed_at: Date; replay_count: number }>(
    `UPDATE parse_errors SET replayed_at = now(), replay_count = replay_count + 1
     WHERE project_id = $1 AND id = $2 AND replay_count = $3 RETURNING replayed_at, replay_count`,
    [projectId, id, seen],
  );
  const row = r.rows[0];
  return row ? { replayedAt: new Date(row.replayed_at), replayCount: row.replay_count } : undefined;
}

/** Takes back a replay's mark whose send failed (if nothing marked it since). */
export async function unmarkParseErrorReplay(q: Queryable, projectId: string, id: string, marked: number, before: Date | null): Promise<void> {
  await q.query(
    `UPDATE parse_errors SET replayed_at = $4::timestamptz, replay_count = replay_count - 1
     WHERE project_id = $1 AND id = $2 AND replay_count = $3`,
    [projectId, id, marked, before ? before.toISOString() : null],
  );
}

/**
 * Deletes up to `limit` parse errors parked more than `olderThanDays` ago (housekeeping, chunk
 * after chunk): a webhook nobody replayed in that time will not be, and a flood of garbage must
 * not stay for ever. SKIP LOCKED skips a row a replay is marking right now.
 */
export function pruneParseErrors(q: Queryable, olderThanDays: number, limit: number): Promise<number> {
  return pruneOlderThan(q, { table: 'parse_errors', key: ['id'], at: 'created_at' }, olderThanDays, limit);
}
