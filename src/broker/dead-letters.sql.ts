// The dead-letter store shared by both brokers: messages that exhausted their retries or crashed
// their consumer too often. Rows are shown (per project) and replayed through the admin API.
import { createHash } from 'node:crypto';
import type { Database, Queryable } from '../db/database.ts';
import { decodeCursor, exactTime, toPage } from '../db/keyset.ts';
import { pruneOlderThan } from '../db/prune.ts';
import { isUuid, uuidv7 } from '../domain/ids.ts';
import { errorText, PROJECT_HEADER, SEND_HEADER, type Broker, type Headers } from './broker.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'dead-letters';

/**
 * Carries a message's original routing key through `send` (a replay goes straight to its queue,
 * where the key would otherwise be the queue name). Both adapters read it and strip it; the
 * RabbitMQ adapter uses the same header for its retry hops.
 */
export const ROUTING_KEY_HEADER = 'x-original-routing-key';

export type DeadLetter = {
  id: string;
  queue: string;
  messageId: string;
  routingKey: string;
  headers: Headers;
  body: Buffer;
  /** The whole body's length: `body` is cut to LIST_BODY_BYTES in lists. */
  bodySize: number;
  error: string;
  attempts: number;
  projectId: string | null;
  createdAt: Date;
  replayedAt: Date | null;
  replayCount: number;
};

/**
 * What a list shows of each body: a raw batch dead-letters at up to 1 MiB, a page of 200 of them
 * whole would be 200 MiB in one answer. One dead letter read by id comes whole.
 */
export const LIST_BODY_BYTES = 64 * 1024;

export type NewDeadLetter = {
  queue: string;
  messageId: string;
  routingKey: string;
  headers: Headers;
  body: Buffer;
  error: string;
  attempts: number;
};

type DeadLetterRow = {
  id: string;
  queue: string;
  message_id: string;
  routing_key: string;
  headers: Headers | null;
  body: Uint8Array;
  body_size: number;
  error: string;
  attempts: number;
  project_id: string | null;
  created_at: Date;
  replayed_at: Date | null;
  replay_count: number;
  cursor_at: string;
};

// created_at rendered with its microseconds, so a cursor compares exactly (a JS Date would drop them
// and page boundaries would skip or repeat rows created in the same millisecond).
const columns = (body: string) => `id::text AS id, queue, message_id, routing_key, headers, ${body} AS body, octet_length(body) AS body_size, error, attempts,
  project_id::text AS project_id, created_at, replayed_at, replay_count,
  ${exactTime('created_at')} AS cursor_at`;
const COLUMNS = columns('body');
const LIST_COLUMNS = columns(`substring(body from 1 for ${LIST_BODY_BYTES})`);

/** PGlite returns bytea as Uint8Array, pg as Buffer; callers always get a Buffer. */
export function toBuffer(b: Uint8Array): Buffer {
  return Buffer.isBuffer(b) ? b : Buffer.from(b.buffer, b.byteOffset, b.byteLength);
}

function toDeadLetter(r: DeadLetterRow): DeadLetter {
  return {
    id: r.id,
    queue: r.queue,
    messageId: r.message_id,
    routingKey: r.routing_key,
    headers: r.headers ?? {},
    body: toBuffer(r.body),
    bodySize: Number(r.body_size),
    error: r.error,
    attempts: r.attempts,
    projectId: r.project_id,
    createdAt: r.created_at,
    replayedAt: r.replayed_at,
    replayCount: r.replay_count,
  };
}

/**
 * What names one death (migration 014): the message in one send (SEND_HEADER) to one queue. None
 * without both: the Postgres broker records a death in the transaction that removes the message,
 * so it never writes one twice and sets no send id.
 */
function deathKey(d: NewDeadLetter): string | null {
  const send = d.headers[SEND_HEADER];
  if (!d.messageId || !send) return null;
  return createHash('sha256').update(JSON.stringify([d.messageId, send])).digest('hex');
}

/**
 * Records a dead message once: the same death written again (same queue, message and send: an ack
 * lost after the first write) changes nothing and answers the first row's id. The tenant comes from
 * the project header when it holds a uuid. Returns the id.
 */
export async function insertDeadLetter(q: Queryable, d: NewDeadLetter): Promise<string> {
  const project = d.headers[PROJECT_HEADER];
  const key = deathKey(d);
  const r = await q.query<{ id: string }>(
    `INSERT INTO dead_letters (id, queue, message_id, routing_key, headers, body, error, attempts, project_id, death_key)
     VALUES ($1::uuid, $2, $3, $4, $5::jsonb, $6, $7, $8, $9::uuid, $10)
     ON CONFLICT (queue, death_key) WHERE death_key IS NOT NULL DO NOTHING
     RETURNING id::text AS id`,
    [uuidv7(), d.queue, d.messageId, d.routingKey, JSON.stringify(d.headers), d.body, d.error, d.attempts, isUuid(project) ? project : null, key],
  );
  if (r.rows[0]) return r.rows[0].id;
  const first = await q.query<{ id: string }>('SELECT id::text AS id FROM dead_letters WHERE queue = $1 AND death_key = $2', [d.queue, key]);
  if (!first.rows[0]) throw new Error(`dead letter of message ${d.messageId} in ${d.queue} conflicts with a row this connection cannot see`);
  return first.rows[0].id;
}

export type DeadLetterFilter = { projectId?: string; queue?: string; limit: number; cursor?: string };

/** Newest first. `nextCursor` is set when there may be more rows after this page. */
export async function listDeadLetters(q: Queryable, f: DeadLetterFilter): Promise<{ items: DeadLetter[]; nextCursor?: string }> {
  const where: string[] = [];
  const params: unknown[] = [];
  if (f.projectId !== undefined) {
    if (!isUuid(f.projectId)) return { items: [] };
    params.push(f.projectId);
    where.push(`project_id = $${params.length}::uuid`);
  }
  if (f.queue !== undefined) {
    params.push(f.queue);
    where.push(`queue = $${params.length}`);
  }
  if (f.cursor !== undefined) {
    const { at, id } = decodeCursor(CURSOR_LIST, f.cursor);
    params.push(at, id);
    where.push(`(created_at, id) < ($${params.length - 1}::timestamptz, $${params.length}::uuid)`);
  }
  const limit = Math.max(1, Math.min(Math.floor(f.limit), 500));
  params.push(limit + 1);
  const r = await q.query<DeadLetterRow>(
    `SELECT ${LIST_COLUMNS} FROM dead_letters ${where.length ? `WHERE ${where.join(' AND ')}` : ''}
     ORDER BY created_at DESC, id DESC LIMIT $${params.length}`,
    params,
  );
  const page = toPage(r.rows, limit, CURSOR_LIST, (row) => ({ at: row.cursor_at, id: row.id }), toDeadLetter);
  return { items: page.rows, ...(page.nextCursor ? { nextCursor: page.nextCursor } : {}) };
}

/** One dead letter; with `projectId`, only when it belongs to that project. */
export async function getDeadLetter(q: Queryable, id: string, scope: { projectId?: string } = {}): Promise<DeadLetter | undefined> {
  if (!isUuid(id) || (scope.projectId !== undefined && !isUuid(scope.projectId))) return undefined;
  const r = await q.query<DeadLetterRow>(
    `SELECT ${COLUMNS} FROM dead_letters WHERE id = $1::uuid AND ($2::uuid IS NULL OR project_id = $2::uuid)`,
    [id, scope.projectId ?? null],
  );
  return r.rows[0] ? toDeadLetter(r.rows[0]) : undefined;
}

/** Marks a replay, only while the row's replay count is still `seen`: of two at once, one wins. */
async function claimReplay(q: Queryable, id: string, seen: number): Promise<DeadLetter | undefined> {
  const r = await q.query<DeadLetterRow>(
    `UPDATE dead_letters SET replayed_at = now(), replay_count = replay_count + 1 WHERE id = $1::uuid AND replay_count = $2 RETURNING ${COLUMNS}`,
    [id, seen],
  );
  return r.rows[0] ? toDeadLetter(r.rows[0]) : undefined;
}

/** Gives a claim back (its send failed): the row as it was, unless another replay came since. */
async function releaseReplay(q: Queryable, claimed: DeadLetter, before: Date | null): Promise<void> {
  await q.query('UPDATE dead_letters SET replayed_at = $3, replay_count = replay_count - 1 WHERE id = $1::uuid AND replay_count = $2', [claimed.id, claimed.replayCount, before]);
}

/**
 * A replay's send failed (the broker down, or no confirm within the deadline). `releaseError`:
 * why giving the replay mark back failed too, when it did — the row then shows a replay that sent
 * nothing (a forced replay redoes it).
 */
export class ReplaySendError extends Error {
  constructor(
    readonly sendError: unknown,
    readonly releaseError?: unknown,
  ) {
    super(`the replay could not be sent: ${errorText(sendError)}`);
    this.name = 'ReplaySendError';
  }

  get markKept(): boolean {
    return this.releaseError !== undefined;
  }
}

/**
 * Sends a dead message back to its queue as a fresh message (same id, headers and body; attempts
 * start again at 1). The row is marked replayed first, against the replay count the caller saw
 * (`seen`; by default the one read here): of two replays of one row at once — a double click —
 * one sends and the other gets 'taken'. A send that fails, or is not confirmed within
 * `timeoutMs`, gives the mark back and throws a ReplaySendError; a crash between the mark and the
 * send leaves the row marked with nothing sent, for a forced replay to redo.
 */
export async function replayDeadLetter(
  db: Database,
  broker: Broker,
  id: string,
  opts: { projectId?: string; seen?: number; timeoutMs?: number } = {},
): Promise<DeadLetter | 'taken' | undefined> {
  const dl = await getDeadLetter(db, id, { projectId: opts.projectId });
  if (!dl) return undefined;
  const claimed = await claimReplay(db, dl.id, opts.seen ?? dl.replayCount);
  if (!claimed) return 'taken';
  // A new send: the old send id must not come along (a broker that sets none would keep it, and the
  // next death would be taken for the old one).
  const { [SEND_HEADER]: _oldSend, ...kept } = dl.headers;
  const headers = { ...kept, [ROUTING_KEY_HEADER]: dl.routingKey };
  try {
    await broker.send(dl.queue, [{ messageId: dl.messageId, body: dl.body, headers }], { timeoutMs: opts.timeoutMs });
  } catch (err) {
    const releaseError = await releaseReplay(db, claimed, dl.replayedAt).then(() => undefined, (e: unknown) => e ?? new Error('release failed'));
    throw new ReplaySendError(err, releaseError);
  }
  return claimed;
}

/**
 * Deletes up to `limit` dead letters last replayed more than `olderThanDays` ago (housekeeping
 * calls it chunk after chunk): their message went back to its queue long since, and the row is
 * only history. One never replayed is kept however old: nobody has dealt with it yet. SKIP LOCKED
 * lets several processes prune at once, and skips a row a replay is marking right now.
 */
export function pruneReplayedDeadLetters(q: Queryable, olderThanDays: number, limit: number): Promise<number> {
  return pruneOlderThan(q, { table: 'dead_letters', key: ['id'], at: 'replayed_at', where: 'replayed_at IS NOT NULL' }, olderThanDays, limit);
}
