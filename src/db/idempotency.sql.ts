// Queries on `idempotency_keys`: one row per (project, Idempotency-Key), kept 24 hours.
import type { Queryable } from './database.ts';
import { toBuffer } from '../broker/dead-letters.sql.ts';

export const IDEMPOTENCY_TTL_HOURS = 24;

export type IdempotencyRecord = {
  method: string;
  path: string;
  requestHash: string;
  /** null while the first request is still running. */
  status: number | null;
  contentType: string | null;
  body: Buffer | null;
};

export type ClaimInput = { projectId: string; keyHash: string; method: string; path: string; requestHash: string; staleMs: number };

/**
 * Claims the key for this request: inserts it, or takes over a record that expired or whose
 * request never finished (the process died mid-request, older than `staleMs`). Returns 'claimed',
 * or the record that holds the key.
 */
export async function claimIdempotencyKey(q: Queryable, c: ClaimInput): Promise<'claimed' | IdempotencyRecord> {
  for (let i = 0; i < 3; i++) {
    const r = await q.query(
      `INSERT INTO idempotency_keys AS k (project_id, key_hash, method, path, request_hash)
       VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (project_id, key_hash) DO UPDATE SET
         method = EXCLUDED.method, path = EXCLUDED.path, request_hash = EXCLUDED.request_hash,
         status = NULL, content_type = NULL, body = NULL, created_at = now(), completed_at = NULL
       WHERE k.created_at < now() - make_interval(hours => ${IDEMPOTENCY_TTL_HOURS})
          OR (k.status IS NULL AND k.created_at < now() - make_interval(secs => $6::float8 / 1000))
       RETURNING 1`,
      [c.projectId, c.keyHash, c.method, c.path, c.requestHash, c.staleMs],
    );
    if (r.rowCount > 0) return 'claimed';
    const held = await q.query(
      'SELECT method, path, request_hash, status, content_type, body FROM idempotency_keys WHERE project_id = $1 AND key_hash = $2',
      [c.projectId, c.keyHash],
    );
    const row = held.rows[0];
    // Deleted between the two statements (released by a failed request): try to claim again.
    if (!row) continue;
    return {
      method: row.method,
      path: row.path,
      requestHash: row.request_hash,
      status: row.status,
      contentType: row.content_type,
      body: row.body === null ? null : toBuffer(row.body),
    };
  }
  throw new Error('could not claim the idempotency key');
}

export async function completeIdempotencyKey(
  q: Queryable,
  projectId: string,
  keyHash: string,
  res: { status: number; contentType: string | null; body: Buffer },
): Promise<void> {
  await q.query(
    `UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5, completed_at = now()
     WHERE project_id = $1 AND key_hash = $2 AND status IS NULL`,
    [projectId, keyHash, res.status, res.contentType, res.body],
  );
}

/** Forgets an unfinished claim (the request failed on our side), so the client can retry. */
export async function releaseIdempotencyKey(q: Queryable, projectId: string, keyHash: string): Promise<void> {
  await q.query('DELETE FROM idempotency_keys WHERE project_id = $1 AND key_hash = $2 AND status IS NULL', [projectId, keyHash]);
}

/**
 * Deletes up to `limit` expired records (for the periodic sweeper; expiry is also enforced when a
 * key is reused); call it again while it returns `limit`. A key being taken over at this moment is
 * locked by its claim and skipped, or no longer expired once the lock is ours.
 */
export async function pruneIdempotencyKeys(q: Queryable, limit: number): Promise<number> {
  const r = await q.query(
    `DELETE FROM idempotency_keys WHERE (project_id, key_hash) IN (
       SELECT project_id, key_hash FROM idempotency_keys
       WHERE created_at < now() - make_interval(hours => ${IDEMPOTENCY_TTL_HOURS})
       ORDER BY created_at LIMIT $1
       FOR UPDATE SKIP LOCKED)`,
    [limit],
  );
  return r.rowCount;
}
