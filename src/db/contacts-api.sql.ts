// Writes to `contacts` made by people through the API (the inbound pipeline has its own upserts).
// Each runs in the caller's tenant transaction, so the outbox rows commit with it.
import type { Queryable } from './database.ts';
import { CONTACT_COLUMNS, toContact, type ContactRecord } from './contacts-read.sql.ts';

export type NewContact = {
  id: string;
  projectId: string;
  name: string | null;
  phone: string;
  waId: string;
  email: string | null;
  tags: readonly string[];
  customFields: Record<string, unknown>;
  source: string;
};

/**
 * Inserts a contact unless the project already has a live one with this phone; returns undefined
 * then. ON CONFLICT on the partial unique index (not check-then-insert) keeps it right when an
 * inbound message from the same number lands at the same moment.
 */
export async function insertContact(tx: Queryable, c: NewContact): Promise<ContactRecord | undefined> {
  const r = await tx.query(
    `INSERT INTO contacts (id, project_id, name, name_source, phone, wa_id, email, tags, custom_fields, source)
     VALUES ($1, $2, $3, CASE WHEN $3::text IS NULL THEN NULL ELSE 'user' END, $4, $5, $6, $7::text[], $8::jsonb, $9)
     ON CONFLICT (project_id, phone) WHERE deleted_at IS NULL AND phone IS NOT NULL DO NOTHING
     RETURNING ${CONTACT_COLUMNS}`,
    [c.id, c.projectId, c.name, c.phone, c.waId, c.email, c.tags, JSON.stringify(c.customFields), c.source],
  );
  return r.rows[0] ? toContact(r.rows[0]) : undefined;
}

/** The id of the live contact holding this phone, to name it in a conflict. */
export async function findContactIdByPhone(tx: Queryable, projectId: string, phone: string): Promise<string | undefined> {
  const r = await tx.query<{ id: string }>(
    'SELECT id FROM contacts WHERE project_id = $1 AND phone = $2 AND deleted_at IS NULL',
    [projectId, phone],
  );
  return r.rows[0]?.id;
}

/**
 * Reads a live contact and locks it until the transaction ends, so two PATCHes do not interleave
 * (`share`: so it is not deleted or merged away meanwhile, while others may read it so too).
 */
export async function lockContact(tx: Queryable, projectId: string, id: string, mode: 'update' | 'share' = 'update'): Promise<ContactRecord | undefined> {
  const r = await tx.query(
    `SELECT ${CONTACT_COLUMNS} FROM contacts WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL FOR ${mode === 'share' ? 'SHARE' : 'UPDATE'}`,
    [projectId, id],
  );
  return r.rows[0] ? toContact(r.rows[0]) : undefined;
}

export type ContactChanges = {
  name: string | null;
  nameSource: 'push' | 'user' | null;
  email: string | null;
  tags: readonly string[];
  customFields: Record<string, unknown>;
};

/** Writes the editable fields of a locked contact (the service has already merged the patch). */
export async function updateContact(tx: Queryable, projectId: string, id: string, c: ContactChanges): Promise<ContactRecord> {
  const r = await tx.query(
    `UPDATE contacts
     SET name = $3, name_source = $4, email = $5, tags = $6::text[], custom_fields = $7::jsonb, updated_at = now()
     WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL
     RETURNING ${CONTACT_COLUMNS}`,
    [projectId, id, c.name, c.nameSource, c.email, c.tags, JSON.stringify(c.customFields)],
  );
  return toContact(r.rows[0]);
}

/** Marks a live contact deleted. Its sessions and messages stay (history), the contact hides. */
export async function softDeleteContact(
  tx: Queryable,
  projectId: string,
  id: string,
): Promise<{ phone: string | null; deletedAt: Date } | undefined> {
  const r = await tx.query<{ phone: string | null; deleted_at: Date }>(
    `UPDATE contacts SET deleted_at = now(), updated_at = now()
     WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL
     RETURNING phone, deleted_at`,
    [projectId, id],
  );
  const row = r.rows[0];
  return row ? { phone: row.phone, deletedAt: new Date(row.deleted_at) } : undefined;
}
