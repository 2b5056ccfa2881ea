// Read-side counts of `dead_letters` for the admin API (the broker writes and replays the rows).
import type { Queryable } from './database.ts';

/**
 * Dead letters per queue not replayed yet, of one project only (a project admin never counts
 * another's) — as the brokers' stats and the `dead_letters` gauge count them.
 */
export async function countDeadLettersByQueue(q: Queryable, projectId: string): Promise<Map<string, number>> {
  const r = await q.query<{ queue: string; n: number }>(
    'SELECT queue, count(*)::int AS n FROM dead_letters WHERE project_id = $1 AND replayed_at IS NULL GROUP BY queue',
    [projectId],
  );
  return new Map(r.rows.map((x) => [x.queue, Number(x.n)]));
}
