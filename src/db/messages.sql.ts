// Writes to `messages` made by the inbound pipeline for provider references to a stored message
// (new messages are stored by inbound-messages.sql.ts; the read API's queries are in
// messages-read.sql.ts). Provider references (acks, reactions, edits, revokes) address a message by
// `external_key`, the bare provider id the database derives from external_id (migration 006),
// because providers name one message in more than one form.
import type { Queryable } from './database.ts';
import { reactionsByParty, type PartyReaction } from './messages-read.sql.ts';

// ---- inbound writes ---------------------------------------------------------------------------

const json = (v: unknown) => (v === null || v === undefined ? null : JSON.stringify(v));

export type MessageRef = {
  id: string;
  contactId: string;
  sessionId: string | null;
  direction: 'inbound' | 'outbound';
  status: string;
  externalId: string | null;
};

/** The message a provider reference points at, locked until the transaction ends. */
export async function lockMessageByKey(tx: Queryable, channelId: string, key: string): Promise<MessageRef | undefined> {
  const r = await tx.query(
    `SELECT id, contact_id, session_id, direction, status, external_id FROM messages
     WHERE channel_id = $1 AND external_key = $2 FOR UPDATE`,
    [channelId, key],
  );
  const row = r.rows[0];
  return row
    ? { id: row.id, contactId: row.contact_id, sessionId: row.session_id, direction: row.direction, status: row.status, externalId: row.external_id }
    : undefined;
}

/**
 * Records a delivery status the caller has checked is a forward move. Each time column is set once,
 * the first time the message reaches (or passes) its step: a message read at once was also
 * delivered then, although the provider never said "delivered".
 */
export async function setMessageStatus(
  tx: Queryable,
  id: string,
  status: string,
  at: Date,
  error: Record<string, unknown> | null,
): Promise<void> {
  await tx.query(
    `UPDATE messages SET status = $2::text,
       sent_at = CASE WHEN $2::text IN ('sent', 'delivered', 'read', 'played') THEN COALESCE(sent_at, $3::timestamptz) ELSE sent_at END,
       delivered_at = CASE WHEN $2::text IN ('delivered', 'read', 'played') THEN COALESCE(delivered_at, $3::timestamptz) ELSE delivered_at END,
       read_at = CASE WHEN $2::text IN ('read', 'played') THEN COALESCE(read_at, $3::timestamptz) ELSE read_at END,
       played_at = CASE WHEN $2::text = 'played' THEN COALESCE(played_at, $3::timestamptz) ELSE played_at END,
       failed_at = CASE WHEN $2::text = 'failed' THEN COALESCE(failed_at, $3::timestamptz) ELSE failed_at END,
       error = COALESCE($4::jsonb, error),
       updated_at = now()
     WHERE id = $1`,
    [id, status, at, json(error)],
  );
}

/** The time column of each step a status can be reported after a later one. */
const STEP_COLUMNS = { sent: 'sent_at', delivered: 'delivered_at', read: 'read_at' } as const;

/**
 * A step reported after a later one (delivered after read): its time, which the later step filled
 * in with its own, goes back to `at` — only where it was filled in, and never forward.
 */
export async function backdateStep(tx: Queryable, id: string, step: keyof typeof STEP_COLUMNS, at: Date): Promise<void> {
  const column = STEP_COLUMNS[step];
  await tx.query(`UPDATE messages SET ${column} = $2::timestamptz, updated_at = now() WHERE id = $1 AND ${column} > $2::timestamptz`, [id, at]);
}

/** Who made a reaction: the conversation is one-to-one (groups are skipped), so it is us or the contact. */
export type ReactionBy = 'me' | 'contact';

/** A message a reaction, an edit or a deletion points at, with what those change, locked. */
export type ChangeTarget = MessageRef & {
  fromMe: boolean;
  text: string | null;
  editedAt: Date | null;
  revokedAt: Date | null;
  reactions: Partial<Record<ReactionBy, string>>;
  /** When each party's reaction (or its removal) applied was made (migration 013). */
  reactionsAt: Partial<Record<ReactionBy, Date>>;
};

export async function lockChangeTarget(tx: Queryable, channelId: string, key: string): Promise<ChangeTarget | undefined> {
  const r = await tx.query(
    `SELECT id, contact_id, session_id, direction, status, external_id, from_me, text, edited_at, revoked_at, reactions, reactions_at
     FROM messages WHERE channel_id = $1 AND external_key = $2 FOR UPDATE`,
    [channelId, key],
  );
  const row = r.rows[0];
  if (!row) return undefined;
  const reactions: ChangeTarget['reactions'] = {};
  const reactionsAt: ChangeTarget['reactionsAt'] = {};
  for (const [by, r] of Object.entries(reactionsByParty(row.reactions, row.reactions_at)) as Array<[ReactionBy, PartyReaction]>) {
    if (r.emoji !== null) reactions[by] = r.emoji;
    if (r.at) reactionsAt[by] = r.at;
  }
  return {
    id: row.id,
    contactId: row.contact_id,
    sessionId: row.session_id,
    direction: row.direction,
    status: row.status,
    externalId: row.external_id,
    fromMe: row.from_me,
    text: row.text,
    editedAt: row.edited_at ? new Date(row.edited_at) : null,
    revokedAt: row.revoked_at ? new Date(row.revoked_at) : null,
    reactions,
    reactionsAt,
  };
}

/**
 * Stores a message's reactions by party and when each was made (or removed), as the caller built
 * them from `lockChangeTarget`'s (the row is locked): keys another process wrote under a phone or
 * LID before migration 029 are thereby replaced.
 */
export async function writeReactions(tx: Queryable, id: string, reactions: ChangeTarget['reactions'], reactionsAt: ChangeTarget['reactionsAt']): Promise<void> {
  await tx.query('UPDATE messages SET reactions = $2::jsonb, reactions_at = $3::jsonb, updated_at = now() WHERE id = $1', [id, JSON.stringify(reactions), JSON.stringify(reactionsAt)]);
}

/** Replaces the text with its edited version made at `at`, keeping the first text in metadata.original_text. */
export async function writeEdit(tx: Queryable, id: string, text: string, at: Date): Promise<void> {
  await tx.query(
    `UPDATE messages SET text = $2::text, edited_at = $3::timestamptz,
       metadata = CASE WHEN metadata ? 'original_text' THEN metadata ELSE metadata || jsonb_build_object('original_text', text) END,
       updated_at = now()
     WHERE id = $1`,
    [id, text, at],
  );
}

/** Marks the message deleted by its sender at `at`; the text stays for the record. */
export async function writeRevoke(tx: Queryable, id: string, at: Date): Promise<void> {
  await tx.query(`UPDATE messages SET revoked_at = $2::timestamptz, updated_at = now() WHERE id = $1`, [id, at]);
}

// ---- reads ------------------------------------------------------------------------------------
// The API's reads live in messages-read.sql.ts.
