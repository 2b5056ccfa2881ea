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
  /** The response's Location header, when it had one. */
  location: string | null;
};

export type ClaimInput = { projectId: string; keyHash: string; method: string; path: string; requestHash: string; staleMs: number };

// A claim is named by its creation time in microseconds: a takeover writes a new one, and the
// request it took over (which may still finish) no longer matches it.
const CLAIM = `(extract(epoch FROM created_at) * 1000000)::bigint`;

/**
 * Claims the key for this request: inserts it, or takes over a record that expired or whose
 * request never finished (the process died mid-request, older than `staleMs`). Returns the claim
 * (for completing or releasing it), or the record that holds the key.
 */
export async function claimIdempotencyKey(q: Queryable, c: ClaimInput): Promise<{ claim: string } | IdempotencyRecord> {
  for (let i = 0; i < 3; i++) {
    const r = await q.query(
      `INSERT INTO idempotency_keys AS k (project_id, key_hash, method, path, request_hash)
       VALUES ($1, $2, $3, $4, $5)
       ON CONFLICT (project_id, key_hash) DO UPDATE SET
         method = EXCLUDED.method, path = EXCLUDED.path, request_hash = EXCLUDED.request_hash,
         status = NULL, content_type = NULL, body = NULL, location = NULL, created_at = now(), completed_at = NULL
       WHERE k.created_at < now() - make_interval(hours => ${IDEMPOTENCY_TTL_HOURS})
          OR (k.status IS NULL AND k.created_at < now() - make_interval(secs => $6::float8 / 1000))
       RETURNING ${CLAIM}::text AS claim`,
      [c.projectId, c.keyHash, c.method, c.path, c.requestHash, c.staleMs],
    );
    if (r.rowCount > 0) return { claim: String(r.rows[0].claim) };
    const held = await q.query(
      'SELECT method, path, request_hash, status, content_type, body, location FROM idempotency_keys WHERE project_id = $1 AND key_hash = $2',
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
      location: row.location ?? null,
    };
  }
  throw new Error('could not claim the idempotency key');
}

/** Records the response of the request that holds `claim` (nothing, if another took the key over since). */
export async function completeIdempotencyKey(
  q: Queryable,
  projectId: string,
  keyHash: string,
  claim: string,
  res: { status: number; contentType: string | null; body: Buffer; location: string | null },
): Promise<boolean> {
  const r = await q.query(
    `UPDATE idempotency_keys SET status = $3, content_type = $4, body = $5, location = $7, completed_at = now()
     WHERE project_id = $1 AND key_hash = $2 AND status IS NULL AND ${CLAIM} = $6::bigint`,
    [projectId, keyHash, res.status, res.contentType, res.body, claim, res.location],
  );
  // False: the claim is no longer this request's (a retry took it over once it looked stale).
  return r.rowCount > 0;
}

/** Forgets an unfinished claim (the request failed on our side), so the client can retry; only its own. */
export async function releaseIdempotencyKey(q: Queryable, projectId: string, keyHash: string, claim: string): Promise<void> {
  await q.query(`DELETE FROM idempotency_keys WHERE project_id = $1 AND key_hash = $2 AND status IS NULL AND ${CLAIM} = $3::bigint`, [projectId, keyHash, claim]);
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
