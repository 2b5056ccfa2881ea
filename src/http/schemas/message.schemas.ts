// Wire shapes of a message (contract.md §2) and of a contact's timeline item, with presenters.
import { Type } from '@sinclair/typebox';
import type { MessageRecord } from '../../db/messages-read.sql.ts';
import type { TimelineEntry } from '../../db/timeline-read.sql.ts';
import { JsonObject } from './contact.schemas.ts';
import { iso, isoOrNull, ListQuery, Nullable, Timestamp, Uuid } from './common.ts';
import { presentSession, Session } from './session.schemas.ts';

const Media = Type.Object({
  url: Nullable(Type.String({ description: 'null until the provider media has been fetched' })),
  mimetype: Nullable(Type.String()),
  filename: Nullable(Type.String()),
});

const Location = Type.Object({
  latitude: Type.Number(),
  longitude: Type.Number(),
  name: Nullable(Type.String()),
  address: Nullable(Type.String()),
});

// Why a message failed, in one shape whatever reported it: the provider's failed status (Meta's
// statuses[].errors[0], with `title` and `details`) or our sender when the provider refused the send
// (Meta's 24-hour window: code "131047").
const MessageError = Type.Object({
  code: Nullable(Type.String({ description: "The provider's error code as a string (Meta's \"131047\"), an HTTP status, or ours: no_address, misconfigured, unsupported, channel_deleted, contact_deleted, blocked_address, no_outcome (taken again and again with no outcome), internal_error (our own failure, not the provider’s)" })),
  title: Nullable(Type.String({ description: "The provider's short title, when it gave one" })),
  message: Type.String({ description: 'What went wrong, in words a person can read' }),
  details: Nullable(Type.String({ description: "The provider's details (Meta's error_data.details), when it gave them" })),
});

const Reaction = Type.Object({
  by: Type.Union([Type.Literal('contact'), Type.Literal('me')], { description: 'Who reacted: the contact, or the business (me)' }),
  emoji: Type.String(),
  at: Nullable({ ...Timestamp, description: 'When it was made, by the provider clock' }),
});

export const Message = Type.Object(
  {
    id: Uuid,
    contact_id: Uuid,
    session_id: Nullable(Uuid),
    channel_id: Uuid,
    direction: Type.Union([Type.Literal('inbound'), Type.Literal('outbound')]),
    from_me: Type.Boolean(),
    type: Type.String({ description: 'text, image, video, audio, voice, document, sticker, location, contact…' }),
    text: Nullable(Type.String({ description: 'The body, or the caption of a media message' })),
    media: Nullable(Media),
    location: Nullable(Location),
    contact_card: Nullable({ ...JsonObject, description: 'A shared contact (vCards)' }),
    external_id: Nullable(Type.String({ description: "The provider's message id" })),
    status: Type.String({ description: 'received (theirs); ours: queued (a reply not sent yet), pending (typed on the phone, not yet on WhatsApp’s server: WAHA ack 0), sent, delivered, read, played, failed' }),
    sent_at: Nullable(Timestamp),
    delivered_at: Nullable(Timestamp),
    read_at: Nullable(Timestamp),
    played_at: Nullable({ ...Timestamp, description: 'When the contact played our voice or video message' }),
    timestamp: { ...Timestamp, description: 'When it was sent, by the provider clock' },
    reply_to_external_id: Nullable(Type.String()),
    metadata: JsonObject,
    edited_at: Nullable({ ...Timestamp, description: 'When the sender last edited it; the first text is in metadata.original_text' }),
    revoked_at: Nullable({ ...Timestamp, description: 'When the sender deleted it for everyone; its text stays here for the record' }),
    reactions: Type.Array(Reaction, { description: "The contact's and the business's current reaction, oldest first (each party has at most one)" }),
    error: Nullable({
      ...MessageError,
      description:
        'Why it failed (status failed), or why the last send attempt failed while a retry waits (status queued); null when none. Cleared when the message is sent.',
    }),
  },
  { title: 'Message' },
);

export const MessageListQuery = ListQuery({
  contact_id: Type.Optional(Uuid),
  session_id: Type.Optional(Uuid),
});

export function presentMessage(m: MessageRecord) {
  return {
    id: m.id,
    contact_id: m.contactId,
    session_id: m.sessionId,
    channel_id: m.channelId,
    direction: m.direction,
    from_me: m.fromMe,
    type: m.type,
    text: m.text,
    media: m.media,
    location: m.location,
    contact_card: m.contactCard,
    external_id: m.externalId,
    status: m.status,
    sent_at: isoOrNull(m.sentAt),
    delivered_at: isoOrNull(m.deliveredAt),
    read_at: isoOrNull(m.readAt),
    played_at: isoOrNull(m.playedAt),
    timestamp: iso(m.timestamp),
    reply_to_external_id: m.replyToExternalId,
    metadata: m.metadata,
    edited_at: isoOrNull(m.editedAt),
    revoked_at: isoOrNull(m.revokedAt),
    reactions: m.reactions.map((x) => ({ by: x.by, emoji: x.emoji, at: isoOrNull(x.at) })),
    error: m.error,
  };
}

// One item of GET /contacts/{id}/timeline: `type` says which key carries the resource, `at` is when
// it happened (a message's provider timestamp, a session's start or end).
export const TimelineItem = Type.Union(
  [
    Type.Object({ type: Type.Literal('message'), at: Timestamp, message: Message }),
    Type.Object({ type: Type.Literal('session_started'), at: Timestamp, session: Session }),
    Type.Object({ type: Type.Literal('session_ended'), at: Timestamp, session: Session }),
  ],
  { title: 'TimelineItem' },
);

export function presentTimelineEntry(e: TimelineEntry) {
  return e.type === 'message'
    ? { type: e.type, at: iso(e.at), message: presentMessage(e.message) }
    : { type: e.type, at: iso(e.at), session: presentSession(e.session) };
}
