// Writes to `messages` made by the inbound pipeline for provider references to a stored message
// (new messages are stored by inbound-messages.sql.ts; the read API's queries are in
// messages-read.sql.ts). Provider references (acks, reactions, edits, revokes) address a message by
// `external_key`, the bare provider id the database derives from external_id (migration 006),
// because providers name one message in more than one form.
import type { Queryable } from './database.ts';

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

/**
 * Sets (or, with an empty emoji, removes) one person's reaction made at `at`. A reaction of theirs
 * older than the one applied changes nothing (reactions_at, migration 013): deliveries come out of
 * order. The sub-select locks the row first, so of two concurrent reactions the second judges its
 * age against what the first left. False: no such message yet.
 */
export async function setReaction(tx: Queryable, channelId: string, key: string, who: string, emoji: string, at: Date): Promise<boolean> {
  const r = await tx.query(
    `UPDATE messages m SET
       reactions = CASE WHEN NOT fresh.ok THEN reactions WHEN $4::text = '' THEN reactions - $3::text
                   ELSE reactions || jsonb_build_object($3::text, $4::text) END,
       reactions_at = CASE WHEN fresh.ok THEN reactions_at || jsonb_build_object($3::text, $5::timestamptz) ELSE reactions_at END,
       updated_at = now()
     FROM (SELECT id, NOT (reactions_at ? $3::text) OR (reactions_at->>$3::text)::timestamptz <= $5::timestamptz AS ok
           FROM messages WHERE channel_id = $1 AND external_key = $2 FOR UPDATE) fresh
     WHERE m.id = fresh.id RETURNING m.id`,
    [channelId, key, who, emoji, at],
  );
  return r.rows.length > 0;
}

/**
 * Replaces the text with its edited version, keeping the first text in metadata.original_text.
 * An edit older than the one already applied (edits can arrive out of order) changes nothing.
 */
export async function editMessage(tx: Queryable, channelId: string, key: string, text: string, at: Date): Promise<boolean> {
  const r = await tx.query(
    `UPDATE messages SET
       text = CASE WHEN edited_at IS NULL OR edited_at <= $4::timestamptz THEN $3::text ELSE text END,
       edited_at = GREATEST(edited_at, $4::timestamptz),
       metadata = CASE WHEN metadata ? 'original_text' THEN metadata
                  ELSE metadata || jsonb_build_object('original_text', text) END,
       updated_at = now()
     WHERE channel_id = $1 AND external_key = $2 RETURNING id`,
    [channelId, key, text, at],
  );
  return r.rows.length > 0;
}

/** Marks the message deleted by its sender; the text stays for the record. */
export async function revokeMessage(tx: Queryable, channelId: string, key: string, at: Date): Promise<boolean> {
  const r = await tx.query(
    `UPDATE messages SET revoked_at = COALESCE(revoked_at, $3::timestamptz), updated_at = now()
     WHERE channel_id = $1 AND external_key = $2 RETURNING id`,
    [channelId, key, at],
  );
  return r.rows.length > 0;
}

// ---- reads ------------------------------------------------------------------------------------
// The API's reads live in messages-read.sql.ts.
