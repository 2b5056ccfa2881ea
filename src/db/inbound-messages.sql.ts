// The inbound write path for new messages: one call of inbound_store_messages() (migration 006)
// stores a whole batch — dedupe, contact, session, message, counters — in the caller's tenant
// transaction (restated in 015, which counts a late message in the session of its time). The function's header comment says what it does per message and why it lives in
// the database.
import type { Queryable } from './database.ts';
import { toContact, type ContactRecord } from './contacts-read.sql.ts';

export type InboundMessageRow = {
  channelId: string;
  /** Bare provider id (messages.external_key): the dedupe key. */
  externalKey: string;
  externalId: string;
  /** Ids for the rows this message may create. */
  messageId: string;
  newContactId: string;
  newSessionId: string;
  phone?: string;
  waId?: string;
  lid?: string;
  pushName?: string;
  source: string;
  adAttribution: Record<string, unknown> | null;
  timestamp: Date;
  fromMe: boolean;
  timeoutMinutes: number;
  type: string;
  text: string | null;
  media: Record<string, unknown> | null;
  location: Record<string, unknown> | null;
  contactCard: Record<string, unknown> | null;
  status: string;
  sentAt: Date | null;
  deliveredAt: Date | null;
  readAt: Date | null;
  playedAt: Date | null;
  replyToExternalId: string | null;
  metadata: Record<string, unknown>;
};

export type StoredOutcome =
  | { outcome: 'duplicate' }
  /** The conversation's active session is over by its due time: end it, then store this again. */
  | { outcome: 'overdue'; contactId: string }
  /** The phone has a contact and the LID one without a phone (`contactId`): merge, then store this again. */
  | { outcome: 'lid_merge'; contactId: string }
  | {
      outcome: 'stored';
      contactId: string;
      contactInserted: boolean;
      /** Fields of the contact this message changed (name, ad_attribution, phone…). */
      contactChanges: string[];
      /** The contact as it is now, when it was created or changed. */
      contact: ContactRecord | null;
      /**
       * The session the message was counted in by its time (migration 015). `ended`: a session
       * already over — one that held the message's time, or one opened for it as ended because
       * a newer session is active (`inserted` too).
       */
      session: { id: string; inserted: boolean; startedAt: Date; timeoutMinutes: number; ended: boolean };
    };

/** SQLSTATE raised when a concurrent transaction stored the same message first. */
export const DUPLICATE_RACE = 'VTDUP';

export async function storeInboundMessages(tx: Queryable, projectId: string, rows: readonly InboundMessageRow[]): Promise<StoredOutcome[]> {
  if (rows.length === 0) return [];
  const now = Date.now();
  const exclusive = oldPhones(rows, now);
  const batch = rows.map((m) => ({
    channel_id: m.channelId,
    external_key: m.externalKey,
    external_id: m.externalId,
    message_id: m.messageId,
    new_contact_id: m.newContactId,
    new_session_id: m.newSessionId,
    phone: m.phone ?? null,
    // A message named by a LID alone takes the lock of its contact's phone, if it has one (024):
    // exclusive when it is old itself (the phones of the others are not known here).
    phone_lock: m.phone ? (exclusive.has(m.phone) ? 'x' : 's') : isOld(m, now) ? 'x' : 's',
    wa_id: m.waId ?? null,
    lid: m.lid ?? null,
    push_name: m.pushName ?? null,
    source: m.source,
    ad_attribution: m.adAttribution,
    timestamp: m.timestamp.toISOString(),
    from_me: m.fromMe,
    timeout_minutes: m.timeoutMinutes,
    type: m.type,
    text: m.text,
    media: m.media,
    location: m.location,
    contact_card: m.contactCard,
    status: m.status,
    sent_at: m.sentAt?.toISOString() ?? null,
    delivered_at: m.deliveredAt?.toISOString() ?? null,
    read_at: m.readAt?.toISOString() ?? null,
    played_at: m.playedAt?.toISOString() ?? null,
    reply_to_external_id: m.replyToExternalId,
    metadata: m.metadata,
  }));
  await lockLids(tx, projectId, rows);
  const r = await tx.query(`SELECT * FROM inbound_store_messages($1::uuid, $2::jsonb) ORDER BY n`, [projectId, JSON.stringify(batch)]);
  return r.rows.map((x): StoredOutcome =>
    x.outcome === 'duplicate'
      ? { outcome: 'duplicate' }
      : x.outcome === 'overdue' || x.outcome === 'lid_merge'
        ? { outcome: x.outcome, contactId: x.contact_id }
        : {
          outcome: 'stored',
          contactId: x.contact_id,
          contactInserted: x.contact_inserted === true,
          contactChanges: x.contact_changes ?? [],
          contact: x.contact ? toContact(x.contact) : null,
          session: { id: x.session_id, inserted: x.session_inserted === true, startedAt: new Date(x.session_started_at), timeoutMinutes: x.session_timeout, ended: x.session_ended === true },
        },
  );
}

/**
 * A new person's messages may name them by LID and phone (GOWS's SenderAlt) or by LID alone. The
 * unique indexes settle a race between two of the same kind, not between the two kinds: a
 * LID-only row and a phone row are both legal, and neither transaction sees the other's
 * uncommitted one, so each would create its own contact. Holding a lock on the LID until commit
 * (a transaction-scoped advisory lock, keyed by project and LID) makes the second wait and then
 * find the first's contact. Taken in sorted order, all before the batch touches any contact row,
 * so two batches never wait on each other's locks in a circle.
 */
async function lockLids(tx: Queryable, projectId: string, rows: readonly InboundMessageRow[]): Promise<void> {
  const lids = [...new Set(rows.flatMap((m) => (m.lid ? [m.lid] : [])))].sort();
  if (lids.length === 0) return;
  await tx.query(`SELECT pg_advisory_xact_lock(hashtextextended($1::text || '/' || lid, 0)) FROM unnest($2::text[]) WITH ORDINALITY AS l(lid, i) ORDER BY i`, [projectId, lids]);
}

/**
 * The phones of the batch with a message older than its session timeout less six minutes (the
 * five a provider's clock may run ahead, and one for this clock against the database's): only
 * such a message can open a session that is due before another message of the same person, so
 * only its phone is locked exclusively before the overdue check (migration 020); the others share
 * the lock.
 */
function oldPhones(rows: readonly InboundMessageRow[], now: number): Set<string> {
  const out = new Set<string>();
  for (const m of rows) if (m.phone && isOld(m, now)) out.add(m.phone);
  return out;
}

function isOld(m: InboundMessageRow, now: number): boolean {
  return m.timestamp.getTime() < now - Math.max(m.timeoutMinutes - 6, 0) * 60_000;
}
