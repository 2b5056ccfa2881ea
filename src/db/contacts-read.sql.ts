// Reads of `contacts` for the API. Every query names the project even inside a tenant transaction:
// the filter is the first wall, row-level security the second. Soft-deleted contacts are invisible.
import { withoutTrunkPrefix } from '../domain/phone.ts';
import { isBlank } from '../domain/text.ts';
import { AppError, notFound } from '../errors.ts';
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, Where, type Page } from './keyset.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'contacts';

export type ContactRecord = {
  id: string;
  projectId: string;
  name: string | null;
  /** 'user' when a person set the name (a WhatsApp push name must not replace it), 'push' otherwise. */
  nameSource: 'push' | 'user' | null;
  phone: string | null;
  email: string | null;
  waId: string | null;
  tags: string[];
  customFields: Record<string, unknown>;
  source: string | null;
  adAttribution: Record<string, unknown> | null;
  firstInteractionAt: Date | null;
  lastInteractionAt: Date | null;
  createdAt: Date;
  updatedAt: Date;
};

export const CONTACT_COLUMNS = `id, project_id, name, name_source, phone, email, wa_id, tags, custom_fields, source,
  ad_attribution, first_interaction_at, last_interaction_at, created_at, updated_at`;

const date = (v: unknown): Date | null => (v === null || v === undefined ? null : new Date(v as string));

export function toContact(r: Row): ContactRecord {
  return {
    id: r.id,
    projectId: r.project_id,
    name: r.name,
    nameSource: r.name_source,
    phone: r.phone,
    email: r.email,
    waId: r.wa_id,
    tags: r.tags ?? [],
    customFields: r.custom_fields ?? {},
    source: r.source,
    adAttribution: r.ad_attribution ?? null,
    firstInteractionAt: date(r.first_interaction_at),
    lastInteractionAt: date(r.last_interaction_at),
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

/**
 * The 404 for a contact that is not there: one merged into another (a LID-only contact joined to
 * its phone's, migration 023) names the contact it went to, so a client holding the old id can
 * follow it.
 */
export async function contactNotFound(q: Queryable, projectId: string, id: string): Promise<AppError> {
  const r = await q.query<{ merged_into: string }>('SELECT merged_into FROM contacts WHERE project_id = $1 AND id = $2 AND merged_into IS NOT NULL', [projectId, id]);
  const into = r.rows[0]?.merged_into;
  return into ? new AppError('not_found', `contact not found: it was merged into contact ${into}`) : notFound('contact');
}

export async function findContact(q: Queryable, projectId: string, id: string): Promise<ContactRecord | undefined> {
  const r = await q.query(
    `SELECT ${CONTACT_COLUMNS} FROM contacts WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL`,
    [projectId, id],
  );
  return r.rows[0] ? toContact(r.rows[0]) : undefined;
}

export type ListContactsQuery = {
  projectId: string;
  /** Part of the name, email or phone (digits, in any formatting). */
  search?: string;
  /** Contacts carrying every one of these tags. */
  tags?: readonly string[];
  limit?: number;
  cursor?: string;
};

/** LIKE treats % and _ as wildcards and \ as the escape; a search for "50%" means the text. */
const likeEscape = (s: string) => s.replace(/[\\%_]/g, (c) => `\\${c}`);

/** The project's contacts, newest first, keyset-paginated on (created_at, id). */
export async function listContacts(q: Queryable, query: ListContactsQuery): Promise<Page<ContactRecord>> {
  const w = new Where();
  w.add(`project_id = ${w.param(query.projectId)}`).add('deleted_at IS NULL');

  const search = query.search?.trim();
  // Blank (spaces or invisible characters alone) is no search, as the route says: every contact.
  if (search && !isBlank(search)) {
    const text = w.param(`%${likeEscape(search)}%`);
    const either = [`name ILIKE ${text}`, `email ILIKE ${text}`];
    // "+55 (11) 9000" and "55119000" both find +5511900000001: compare digits only, and only when
    // the search looks like a phone, so a name with one digit does not match every phone.
    const digits = withoutTrunkPrefix(search).replace(/\D/g, '');
    if (digits.length >= 3 && /^\+?[\d\s().-]+$/.test(search)) either.push(`phone LIKE ${w.param(`%${digits}%`)}`);
    w.add(`(${either.join(' OR ')})`);
  }
  if (query.tags && query.tags.length > 0) w.add(`tags @> ${w.param(query.tags)}::text[]`);
  if (query.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, query.cursor);
    w.add(`(created_at, id) < (${w.param(c.at)}::timestamptz, ${w.param(c.id)}::uuid)`);
  }
  const limit = pageSize(query.limit);
  const r = await q.query(
    `SELECT ${CONTACT_COLUMNS}, ${exactTime('created_at')} AS k_at FROM contacts
     WHERE ${w.sql()}
     ORDER BY created_at DESC, id DESC
     LIMIT ${w.param(limit + 1)}`,
    w.params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (row) => ({ at: row.k_at, id: row.id }), toContact);
}
