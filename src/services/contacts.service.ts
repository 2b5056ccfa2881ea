// Contacts as people manage them through the API: list/search, read, create, edit, delete, and the
// contact's conversations. Every call runs in a tenant transaction (RLS is the second wall), and
// each change appends its event in that same transaction, so no change commits without its event.
import type { Database, Queryable } from '../db/database.ts';
import { withTransaction } from '../db/transaction.ts';
import { findContact, listContacts, contactNotFound, type ContactRecord } from '../db/contacts-read.sql.ts';
import { findContactIdByPhone, insertContact, lockContact, softDeleteContact, updateContact } from '../db/contacts-api.sql.ts';
import { listMessages, type MessageRecord } from '../db/messages-read.sql.ts';
import { listSessions, type SessionRecord } from '../db/sessions-read.sql.ts';
import { listTimeline, type TimelineEntry } from '../db/timeline-read.sql.ts';
import { pageOf, type Page } from '../db/keyset.ts';
import { newEvent } from '../domain/events.ts';
import { contactData } from '../inbound/payloads.ts';
import { uuidv7 } from '../domain/ids.ts';
import { normalizePhone, waIdFromPhone } from '../domain/phone.ts';
import { isBlank } from '../domain/text.ts';
import { AppError, invalid } from '../errors.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';
import { endContactSessionsNow } from '../db/session-lifecycle.sql.ts';
import type { Caller } from '../domain/permissions.ts';
import { actorOf, sessionEndedEvent } from './session-lifecycle.service.ts';

export type PageQuery = { limit?: number; cursor?: string };

export type CreateContactInput = {
  phone: string;
  name?: string | null;
  email?: string | null;
  tags?: readonly string[];
  custom_fields?: Record<string, unknown>;
};

/** Absent keys stay as they are; null clears name/email; custom_fields merge key by key (null removes a key). */
export type UpdateContactInput = {
  name?: string | null;
  email?: string | null;
  tags?: readonly string[];
  custom_fields?: Record<string, unknown>;
};

export type ContactsService = ReturnType<typeof makeContactsService>;

const MAX_CUSTOM_FIELDS_BYTES = 16 * 1024;

export function makeContactsService(deps: { db: Database }) {
  const { db } = deps;
  const tenant = <T>(projectId: string, fn: (tx: Queryable) => Promise<T>) => withTransaction(db, fn, { projectId });

  /**
   * The contact-scoped reads answer 404 for a contact that is not (or no longer) there; one merged
   * into another (migration 023) says which, so a client holding the old id can follow it.
   */
  async function requireContact(tx: Queryable, projectId: string, id: string) {
    const c = await findContact(tx, projectId, id);
    if (c) return c;
    throw await contactNotFound(tx, projectId, id);
  }

  return {
    list(projectId: string, query: PageQuery & { search?: string; tags?: readonly string[] }): Promise<Page<ContactRecord>> {
      // Tags are stored trimmed: so is a tag asked for. A blank one can match nothing (no tag is
      // blank): that is a mistake in the request, not an empty result.
      const tags = query.tags?.map((t) => t.trim());
      if (tags?.some((t) => isBlank(t))) throw invalid('tag must not be blank', [{ field: 'tag', message: 'expected a tag name' }]);
      if (tags?.some((t) => t.length > 64)) throw invalid('a tag has at most 64 characters', [{ field: 'tag', message: 'longer than 64 characters once trimmed' }]);
      return tenant(projectId, (tx) => listContacts(tx, { ...query, ...(tags && { tags }), projectId }));
    },

    get(projectId: string, id: string): Promise<ContactRecord> {
      return tenant(projectId, (tx) => requireContact(tx, projectId, id));
    },

    create(projectId: string, input: CreateContactInput): Promise<ContactRecord> {
      const phone = normalizePhone(input.phone);
      if (!phone) {
        throw invalid(`phone "${input.phone}" is not a valid phone number; send it in E.164, like +5511999990000`, [
          { field: 'phone', message: 'expected an international number: + country code and 7 to 15 digits' },
        ]);
      }
      const fields = {
        name: cleanName(input.name ?? null),
        email: cleanEmail(input.email ?? null),
        tags: cleanTags(input.tags ?? []),
        customFields: mergeCustomFields({}, input.custom_fields ?? {}),
      };
      return tenant(projectId, async (tx) => {
        const contact = await insertContact(tx, { id: uuidv7(), projectId, phone, waId: waIdFromPhone(phone), source: 'api', ...fields });
        if (!contact) {
          const existing = await findContactIdByPhone(tx, projectId, phone);
          throw new AppError('conflict', `a contact with phone ${phone} already exists${existing ? ` (id ${existing})` : ''}`, [
            { field: 'phone', message: 'already used by another contact of this project' },
          ]);
        }
        await appendEvents(tx, [
          newEvent('contact.created', { projectId, aggregateId: contact.id, data: contactData(contact), occurredAt: contact.createdAt }),
        ]);
        return contact;
      });
    },

    update(projectId: string, id: string, patch: UpdateContactInput): Promise<ContactRecord> {
      return tenant(projectId, async (tx) => {
        const before = await lockContact(tx, projectId, id);
        if (!before) throw await contactNotFound(tx, projectId, id);
        const name = patch.name === undefined ? before.name : cleanName(patch.name);
        const next = {
          name,
          // A name a person typed is theirs: marking it 'user' stops push names from replacing it.
          // Clearing it hands the name back to WhatsApp (the next push name fills it).
          nameSource: patch.name === undefined ? before.nameSource : name === null ? null : ('user' as const),
          email: patch.email === undefined ? before.email : cleanEmail(patch.email),
          tags: patch.tags === undefined ? before.tags : cleanTags(patch.tags),
          customFields: patch.custom_fields === undefined ? before.customFields : mergeCustomFields(before.customFields, patch.custom_fields),
        };
        const changed = [
          ...(next.name !== before.name ? ['name'] : []),
          ...(next.email !== before.email ? ['email'] : []),
          ...(!sameJson(next.tags, before.tags) ? ['tags'] : []),
          ...(!sameJson(next.customFields, before.customFields) ? ['custom_fields'] : []),
        ];
        // Re-sending the same name still has to be written when it claims a push name for the user.
        if (changed.length === 0 && next.nameSource === before.nameSource) return before;
        const after = await updateContact(tx, projectId, id, next);
        // Nothing a subscriber can see changed: no event (a replayed PATCH from an automation stays quiet).
        if (changed.length === 0) return after;
        await appendEvents(tx, [
          newEvent('contact.updated', {
            projectId,
            aggregateId: id,
            data: { ...contactData(after), changed_fields: changed },
            occurredAt: after.updatedAt,
          }),
        ]);
        return after;
      });
    },

    /**
     * Soft-deletes the contact (its sessions and messages are kept) and ends its active sessions
     * (reason `contact_deleted`): a later message from that phone starts a new contact and a new
     * session, and the old conversation does not stay open beside it until it times out.
     */
    async remove(caller: Caller, id: string): Promise<void> {
      const projectId = caller.projectId;
      await tenant(projectId, async (tx) => {
        const gone = await softDeleteContact(tx, projectId, id);
        if (!gone) throw await contactNotFound(tx, projectId, id);
        const deletedAt = gone.deletedAt.toISOString();
        const sessions = await endContactSessionsNow(tx, { projectId, contactId: id, reason: 'contact_deleted', closedBy: actorOf(caller).label, now: gone.deletedAt });
        await appendEvents(tx, [
          ...sessions.map(sessionEndedEvent),
          newEvent('contact.deleted', { projectId, aggregateId: id, data: { contact_id: id, phone: gone.phone, deleted_at: deletedAt }, occurredAt: deletedAt }),
        ]);
      });
    },

    sessions(projectId: string, contactId: string, query: PageQuery): Promise<Page<SessionRecord>> {
      return tenant(projectId, async (tx) => {
        await requireContact(tx, projectId, contactId);
        return listSessions(tx, { ...pageOf(query), projectId, contactId });
      });
    },

    messages(projectId: string, contactId: string, query: PageQuery): Promise<Page<MessageRecord>> {
      return tenant(projectId, async (tx) => {
        await requireContact(tx, projectId, contactId);
        return listMessages(tx, { ...pageOf(query), projectId, contactId });
      });
    },

    timeline(projectId: string, contactId: string, query: PageQuery): Promise<Page<TimelineEntry>> {
      return tenant(projectId, async (tx) => {
        await requireContact(tx, projectId, contactId);
        return listTimeline(tx, { ...pageOf(query), projectId, contactId });
      });
    },
  };
}

function cleanName(name: string | null): string | null {
  if (name === null) return null;
  const n = name.trim();
  if (!n) throw invalid('name must not be blank; send null to clear it', [{ field: 'name', message: 'blank' }]);
  return n;
}

function cleanEmail(email: string | null): string | null {
  return email === null ? null : email.trim();
}

/** Trimmed, without blanks or repeats, in the order given (so a client's order survives). */
function cleanTags(tags: readonly string[]): string[] {
  const out = new Set<string>();
  for (const t of tags) if (t.trim()) out.add(t.trim());
  return [...out];
}

function mergeCustomFields(base: Record<string, unknown>, patch: Record<string, unknown>): Record<string, unknown> {
  const out: Record<string, unknown> = { ...base };
  for (const [k, v] of Object.entries(patch)) {
    if (v === null) delete out[k];
    else out[k] = v;
  }
  if (Buffer.byteLength(JSON.stringify(out)) > MAX_CUSTOM_FIELDS_BYTES) {
    throw invalid(`custom_fields is larger than ${MAX_CUSTOM_FIELDS_BYTES / 1024} KiB`, [{ field: 'custom_fields', message: 'too large' }]);
  }
  return out;
}

/** Deep equality for JSON values; jsonb does not keep key order, so keys are compared sorted. */
function sameJson(a: unknown, b: unknown): boolean {
  return stable(a) === stable(b);
}

function stable(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(stable).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v).sort().map((k) => `${JSON.stringify(k)}:${stable((v as Record<string, unknown>)[k])}`).join(',')}}`;
  }
  return JSON.stringify(v);
}
