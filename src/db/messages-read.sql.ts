// Reads of `messages` for the API, ordered by the provider's timestamp (when it was said, not when
// we stored it: webhooks can arrive late or out of order), with the id breaking ties.
import { failureView, type FailureView } from '../domain/inbound.ts';
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, Where, type Page } from './keyset.ts';

export type MessageRecord = {
  id: string;
  projectId: string;
  contactId: string;
  sessionId: string | null;
  channelId: string;
  direction: 'inbound' | 'outbound';
  fromMe: boolean;
  type: string;
  text: string | null;
  media: { url: string | null; mimetype: string | null; filename: string | null } | null;
  location: { latitude: number; longitude: number; name: string | null; address: string | null } | null;
  contactCard: Record<string, unknown> | null;
  externalId: string | null;
  status: string;
  sentAt: Date | null;
  deliveredAt: Date | null;
  readAt: Date | null;
  playedAt: Date | null;
  timestamp: Date;
  replyToExternalId: string | null;
  metadata: Record<string, unknown>;
  /** When the sender last edited it (the first text is in metadata.original_text); null if never. */
  editedAt: Date | null;
  /** When the sender deleted it for everyone (its text stays); null if not. */
  revokedAt: Date | null;
  /** The contact's and our reaction, oldest first. */
  reactions: Array<{ by: 'contact' | 'me'; emoji: string; at: Date | null }>;
  /** Why the message failed (or why its last send attempt did, while a retry waits); null when none. */
  error: MessageError | null;
};

export type MessageError = FailureView;

export const MESSAGE_COLUMNS = `id, project_id, contact_id, session_id, channel_id, direction, from_me, type, text, media,
  location, contact_card, external_id, status, sent_at, delivered_at, read_at, played_at, "timestamp", reply_to_external_id, metadata, error,
  edited_at, revoked_at, reactions, reactions_at`;

const date = (v: unknown): Date | null => (v === null || v === undefined ? null : new Date(v as string));
const str = (v: unknown): string | null => (typeof v === 'string' ? v : null);

// The stored media/location documents may carry provider extras (media ids, hashes); the API shows
// the documented fields only, and tolerates either spelling of the mime type.
function toMedia(m: any): MessageRecord['media'] {
  if (!m || typeof m !== 'object') return null;
  return { url: str(m.url), mimetype: str(m.mimetype ?? m.mime_type ?? m.mimeType), filename: str(m.filename ?? m.fileName) };
}

function toLocation(l: any): MessageRecord['location'] {
  if (!l || typeof l !== 'object') return null;
  return { latitude: Number(l.latitude), longitude: Number(l.longitude), name: str(l.name), address: str(l.address) };
}

// Two writers store `error` in their own shapes; the API shows one (failureView).
function toError(e: unknown): MessageError | null {
  return e && typeof e === 'object' ? failureView(e) : null;
}

export type PartyReaction = { emoji: string | null; at: Date | null };

/**
 * A message's stored reactions (`reactions`, and `reactions_at`: when each was made or removed) by
 * party. Keys are `me` and `contact` (migration 029); any other key is the contact's under the id a
 * process older than that wrote it (phone or LID), and the newest of the contact's keys counts.
 */
export function reactionsByParty(reactions: unknown, times: unknown): Partial<Record<'me' | 'contact', PartyReaction>> {
  const emojis = (reactions && typeof reactions === 'object' ? reactions : {}) as Record<string, unknown>;
  const at = (times && typeof times === 'object' ? times : {}) as Record<string, unknown>;
  const out: Partial<Record<'me' | 'contact', PartyReaction>> = {};
  for (const key of new Set([...Object.keys(emojis), ...Object.keys(at)])) {
    const by = key === 'me' ? 'me' : 'contact';
    const e = emojis[key];
    const mine: PartyReaction = { emoji: typeof e === 'string' && e !== '' ? e : null, at: date(at[key]) };
    const other = out[by];
    if (!other || (mine.at?.getTime() ?? -Infinity) > (other.at?.getTime() ?? -Infinity) || (key === by && mine.at?.getTime() === other.at?.getTime())) out[by] = mine;
  }
  return out;
}

function toReactions(reactions: unknown, times: unknown): MessageRecord['reactions'] {
  return Object.entries(reactionsByParty(reactions, times))
    .filter((e): e is ['contact' | 'me', { emoji: string; at: Date | null }] => e[1].emoji !== null)
    .map(([by, r]) => ({ by, emoji: r.emoji, at: r.at }))
    .sort((a, b) => (a.at?.getTime() ?? 0) - (b.at?.getTime() ?? 0) || a.by.localeCompare(b.by));
}

export function toMessage(r: Row): MessageRecord {
  return {
    id: r.id,
    projectId: r.project_id,
    contactId: r.contact_id,
    sessionId: r.session_id,
    channelId: r.channel_id,
    direction: r.direction,
    fromMe: r.from_me,
    type: r.type,
    text: r.text,
    media: toMedia(r.media),
    location: toLocation(r.location),
    contactCard: r.contact_card ?? null,
    externalId: r.external_id,
    status: r.status,
    sentAt: date(r.sent_at),
    deliveredAt: date(r.delivered_at),
    readAt: date(r.read_at),
    playedAt: date(r.played_at),
    timestamp: new Date(r.timestamp),
    replyToExternalId: r.reply_to_external_id,
    metadata: r.metadata ?? {},
    editedAt: date(r.edited_at),
    revokedAt: date(r.revoked_at),
    reactions: toReactions(r.reactions, r.reactions_at),
    error: toError(r.error),
  };
}

export async function findMessage(q: Queryable, projectId: string, id: string): Promise<MessageRecord | undefined> {
  const r = await q.query(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE project_id = $1 AND id = $2`, [projectId, id]);
  return r.rows[0] ? toMessage(r.rows[0]) : undefined;
}

export type ListMessagesQuery = {
  projectId: string;
  contactId?: string;
  sessionId?: string;
  /** 'newest' (default): the inbox view. 'oldest': reading a conversation from its start. */
  order?: 'newest' | 'oldest';
  limit?: number;
  cursor?: string;
};

export async function listMessages(q: Queryable, query: ListMessagesQuery): Promise<Page<MessageRecord>> {
  const w = new Where();
  w.add(`project_id = ${w.param(query.projectId)}`);
  if (query.contactId !== undefined) w.add(`contact_id = ${w.param(query.contactId)}::uuid`);
  if (query.sessionId !== undefined) w.add(`session_id = ${w.param(query.sessionId)}::uuid`);
  const oldest = query.order === 'oldest';
  const list = oldest ? 'messages:oldest' : 'messages:newest';
  if (query.cursor !== undefined) {
    const c = decodeCursor(list, query.cursor);
    w.add(`("timestamp", id) ${oldest ? '>' : '<'} (${w.param(c.at)}::timestamptz, ${w.param(c.id)}::uuid)`);
  }
  const dir = oldest ? 'ASC' : 'DESC';
  const limit = pageSize(query.limit);
  const r = await q.query(
    `SELECT ${MESSAGE_COLUMNS}, ${exactTime('"timestamp"')} AS k_at FROM messages
     WHERE ${w.sql()}
     ORDER BY "timestamp" ${dir}, id ${dir}
     LIMIT ${w.param(limit + 1)}`,
    w.params,
  );
  return toPage(r.rows, limit, list, (row) => ({ at: row.k_at, id: row.id }), toMessage);
}

/** Full rows of the given messages (the timeline fetches its items by id). */
export async function messagesByIds(q: Queryable, projectId: string, ids: readonly string[]): Promise<Map<string, MessageRecord>> {
  if (ids.length === 0) return new Map();
  const r = await q.query(`SELECT ${MESSAGE_COLUMNS} FROM messages WHERE project_id = $1 AND id = ANY($2::uuid[])`, [projectId, ids]);
  return new Map(r.rows.map((row) => [row.id as string, toMessage(row)]));
}
