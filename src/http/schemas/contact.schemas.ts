// Wire shapes of contacts (contract.md §2): the response, the create and update bodies, the list
// filters, and the presenter from the query layer's record to the response.
import { Type } from '@sinclair/typebox';
import type { ContactRecord } from '../../db/contacts-read.sql.ts';
import { iso, isoOrNull, ListQuery, NOT_BLANK, Nullable, Timestamp, Uuid } from './common.ts';
import { MAX_NAME_LENGTH } from '../../domain/text.ts';

/** Free-form JSON object (custom fields, ad attribution, metadata): serialized as it is. */
export const JsonObject = Type.Object({}, { additionalProperties: true });

export const Contact = Type.Object(
  {
    id: Uuid,
    name: Nullable(Type.String()),
    phone: Nullable(Type.String({ description: 'E.164, e.g. +5511999990000' })),
    email: Nullable(Type.String()),
    wa_id: Nullable(Type.String({ description: 'WhatsApp id: the phone digits without +' })),
    tags: Type.Array(Type.String()),
    custom_fields: JsonObject,
    source: Nullable(Type.String({ description: 'Where the contact came from: whatsapp (first message), api…' })),
    ad_attribution: Nullable({ ...JsonObject, description: 'The click-to-WhatsApp ad that brought the contact, if any' }),
    first_interaction_at: Nullable(Timestamp),
    last_interaction_at: Nullable(Timestamp),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Contact' },
);

// Not blank: spaces or invisible characters alone are no name, and no tag (as everywhere else).
const Name = Type.String({ minLength: 1, maxLength: MAX_NAME_LENGTH, pattern: NOT_BLANK });
const Email = Type.String({ format: 'email', maxLength: 254 });
const Tags = Type.Array(Type.String({ minLength: 1, maxLength: 64, pattern: NOT_BLANK }), { maxItems: 100 });

export const CreateContactBody = Type.Object(
  {
    phone: Type.String({ minLength: 1, maxLength: 64, description: 'Any common formatting; stored in E.164. Unique per project' }),
    name: Type.Optional(Nullable(Name)),
    email: Type.Optional(Nullable(Email)),
    tags: Type.Optional(Tags),
    custom_fields: Type.Optional(JsonObject),
  },
  { additionalProperties: false },
);

export const UpdateContactBody = Type.Object(
  {
    name: Type.Optional(Nullable({ ...Name, description: 'null clears it (a WhatsApp push name may then fill it again)' })),
    email: Type.Optional(Nullable(Email)),
    tags: Type.Optional({ ...Tags, description: 'Replaces the whole list' }),
    custom_fields: Type.Optional({ ...JsonObject, description: 'Merged key by key into the existing fields; a null value removes that key' }),
  },
  { additionalProperties: false, description: 'Fields left out stay as they are. The phone cannot change.' },
);

export const ContactListQuery = ListQuery({
  search: Type.Optional(Type.String({ maxLength: 200, description: 'Part of the name, email or phone (any formatting); empty or blank lists every contact' })),
  tag: Type.Optional(
    // 64 characters once trimmed (as tags are stored); the room around it is for the spaces.
    Type.Array(Type.String({ minLength: 1, maxLength: 200 }), { maxItems: 20, description: 'Repeat to require several tags (all must match). Matched as stored: trimmed (at most 64 characters then), case kept; a blank tag is a 400' }),
  ),
});

export function presentContact(c: ContactRecord) {
  return {
    id: c.id,
    name: c.name,
    phone: c.phone,
    email: c.email,
    wa_id: c.waId,
    tags: c.tags,
    custom_fields: c.customFields,
    source: c.source,
    ad_attribution: c.adAttribution,
    first_interaction_at: isoOrNull(c.firstInteractionAt),
    last_interaction_at: isoOrNull(c.lastInteractionAt),
    created_at: iso(c.createdAt),
    updated_at: iso(c.updatedAt),
  };
}
