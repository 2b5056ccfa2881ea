// The spill table: raw webhooks the ingress could not hand to the broker in time. The drainer
// claims rows under a lease (no transaction is held while it publishes: PGlite is one connection,
// and the Postgres broker writes through the same database), sends them, then deletes them.
import type { Queryable } from './database.ts';
import type { Headers } from '../broker/broker.ts';

export type SpilledEvent = {
  id: string;
  provider: string;
  channelId: string;
  headers: Headers;
  body: Buffer;
  receivedAt: Date;
};

export async function spillInboundEvent(q: Queryable, e: SpilledEvent): Promise<void> {
  await q.query(
    `INSERT INTO inbound_events (id, provider, channel_id, headers, body, received_at) VALUES ($1, $2, $3, $4::jsonb, $5, $6)
     ON CONFLICT (id) DO NOTHING`,
    [e.id, e.provider, e.channelId, JSON.stringify(e.headers), e.body, e.receivedAt],
  );
}

/**
 * Leases up to `limit` spilled rows, oldest first, skipping rows another drainer holds, and no more
 * than about `maxBytes` of bodies: the rows that start before that many bytes (always the first).
 * Bodies reach 3 MiB (Meta's): 200 of them in one send would not fit a query parameter.
 */
export async function claimSpilled(q: Queryable, limit: number, leaseMs: number, maxBytes = 4 * 1024 * 1024): Promise<SpilledEvent[]> {
  const r = await q.query(
    `WITH c AS (
       SELECT id, seq, octet_length(body) AS size FROM inbound_events
       WHERE locked_until IS NULL OR locked_until <= now()
       ORDER BY seq LIMIT $1 FOR UPDATE SKIP LOCKED),
     k AS (SELECT id, sum(size) OVER (ORDER BY seq) - size AS before FROM c)
     UPDATE inbound_events e SET locked_until = now() + $2::int * interval '1 millisecond'
     FROM k WHERE e.id = k.id AND k.before < $3
     RETURNING e.id, e.seq, e.provider, e.channel_id, e.headers, e.body, e.received_at`,
    [limit, leaseMs, maxBytes],
  );
  return r.rows
    .sort((a, b) => Number(a.seq) - Number(b.seq))
    .map((row) => ({
      id: row.id,
      provider: row.provider,
      channelId: row.channel_id,
      headers: row.headers ?? {},
      body: Buffer.from(row.body),
      receivedAt: new Date(row.received_at),
    }));
}

/** Removes rows the broker has confirmed. */
export async function deleteSpilled(q: Queryable, ids: readonly string[]): Promise<void> {
  if (ids.length) await q.query(`DELETE FROM inbound_events WHERE id = ANY($1::uuid[])`, [ids]);
}

/** Hands rows back at once after a failed send, so the next attempt need not wait for the lease. */
export async function releaseSpilled(q: Queryable, ids: readonly string[]): Promise<void> {
  if (ids.length) await q.query(`UPDATE inbound_events SET locked_until = NULL WHERE id = ANY($1::uuid[])`, [ids]);
}

export async function countSpilled(q: Queryable): Promise<number> {
  const r = await q.query<{ n: number }>(`SELECT count(*)::int AS n FROM inbound_events`);
  return Number(r.rows[0].n);
}
