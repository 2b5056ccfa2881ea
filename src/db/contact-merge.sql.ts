// One person, two contacts: a contact first known by its WhatsApp LID alone (the phone hidden) and
// the contact of its phone (created through the API, or by traffic that named the phone). A message
// that names both LID and phone shows they are one; the LID-only contact is merged into the phone's
// (migration 023). Runs in the inbound transaction, which holds the LID's and the phone's locks.
import type { Queryable } from './database.ts';
import { toContact, type ContactRecord } from './contacts-read.sql.ts';
import { endSessionsBeforeMerge, type EndedSession } from './session-lifecycle.sql.ts';

export type ContactMerge = {
  /** The phone's contact, as it is after the merge. */
  into: ContactRecord;
  /** The LID-only contact, now deleted, `merged_into` the other. */
  mergedId: string;
  /** Sessions ended because both contacts had one active on a channel (`contact_merged`). */
  ended: EndedSession[];
};

/**
 * Merges the LID-only contact `fromId` into the live contact of `phone`, giving it `lid`: its
 * sessions, messages (replies still queued included) move, and its pipeline places and history in
 * the pipelines the phone's contact is not in; where both have an active session on a channel, the
 * one that went quiet first ends; names, email, tags, custom fields and attribution are kept where
 * the phone's contact has none (the earlier first touch wins); the totals add up.
 * Returns undefined when either is no longer there as it was.
 */
export async function mergeLidContact(
  tx: Queryable,
  m: { projectId: string; fromId: string; phone: string; lid: string },
): Promise<ContactMerge | undefined> {
  const found = await tx.query<{ id: string; phone: string | null }>(
    `SELECT id, phone FROM contacts
     WHERE project_id = $1 AND deleted_at IS NULL AND ((id = $2 AND phone IS NULL AND wa_lid = $4) OR phone = $3)
     ORDER BY id FOR UPDATE`,
    [m.projectId, m.fromId, m.phone, m.lid],
  );
  const from = found.rows.find((r) => r.id === m.fromId && r.phone === null);
  const into = found.rows.find((r) => r.phone === m.phone);
  if (!from || !into) return undefined;
  const ids = { projectId: m.projectId, fromContactId: from.id, intoContactId: into.id };

  const ended = await endSessionsBeforeMerge(tx, { ...ids, now: null });
  const args = [m.projectId, from.id, into.id];
  await tx.query('UPDATE sessions SET contact_id = $3, updated_at = now() WHERE project_id = $1 AND contact_id = $2', args);
  await tx.query('UPDATE messages SET contact_id = $3, updated_at = now() WHERE project_id = $1 AND contact_id = $2', args);
  // A pipeline the phone's contact is already in keeps its place and its history there; in the
  // others, the LID-only contact's place and history move (history first: it asks where the
  // phone's contact stands before the places move).
  const elsewhere = (t: string) => `NOT EXISTS (SELECT 1 FROM contact_pipeline_statuses i WHERE i.contact_id = $3 AND i.pipeline_id = ${t}.pipeline_id)`;
  await tx.query(`UPDATE contact_pipeline_history h SET contact_id = $3 WHERE h.project_id = $1 AND h.contact_id = $2 AND ${elsewhere('h')}`, args);
  await tx.query(`UPDATE contact_pipeline_statuses f SET contact_id = $3 WHERE f.project_id = $1 AND f.contact_id = $2 AND ${elsewhere('f')}`, args);
  await tx.query('DELETE FROM contact_pipeline_statuses WHERE project_id = $1 AND contact_id = $2', [m.projectId, from.id]);

  // A name a person set beats a push name; otherwise the phone's contact keeps its own.
  const takeName = `(i.name IS NULL OR (i.name_source IS DISTINCT FROM 'user' AND f.name_source = 'user' AND f.name IS NOT NULL))`;
  // The first touch is the earlier one. (The source stays the phone's contact's, as a first ad on a
  // known contact leaves it.)
  const takeAd = `(f.ad_attribution IS NOT NULL AND (i.ad_attribution IS NULL OR f.first_interaction_at < i.first_interaction_at))`;
  const r = await tx.query(
    `UPDATE contacts i SET
       name = CASE WHEN ${takeName} THEN f.name ELSE i.name END,
       name_source = CASE WHEN ${takeName} THEN f.name_source ELSE i.name_source END,
       email = coalesce(i.email, f.email),
       wa_lid = $4,
       tags = i.tags || ARRAY(SELECT t FROM unnest(f.tags) WITH ORDINALITY AS x(t, n) WHERE NOT t = ANY(i.tags) ORDER BY n),
       custom_fields = f.custom_fields || i.custom_fields,
       source = coalesce(i.source, f.source),
       ad_attribution = CASE WHEN ${takeAd} THEN f.ad_attribution ELSE i.ad_attribution END,
       first_interaction_at = least(i.first_interaction_at, f.first_interaction_at),
       last_interaction_at = greatest(i.last_interaction_at, f.last_interaction_at),
       total_sessions = i.total_sessions + f.total_sessions,
       total_messages = i.total_messages + f.total_messages,
       ended_sessions = i.ended_sessions + f.ended_sessions,
       total_session_seconds = i.total_session_seconds + f.total_session_seconds,
       last_session_ended_at = greatest(i.last_session_ended_at, f.last_session_ended_at),
       updated_at = now()
     FROM contacts f
     WHERE i.project_id = $1 AND i.id = $3 AND f.id = $2
     RETURNING i.*`,
    [...args, m.lid],
  );
  await tx.query('UPDATE contacts SET deleted_at = now(), merged_into = $3, updated_at = now() WHERE project_id = $1 AND id = $2', args);
  // The sessions ended above are the phone contact's now: their session.ended says so.
  return { into: toContact(r.rows[0]), mergedId: from.id, ended: ended.map((s) => ({ ...s, contactId: into.id })) };
}
