// Wire shape of a conversation session (contract.md §2) and its presenter.
import { Type } from '@sinclair/typebox';
import type { SessionRecord } from '../../db/sessions-read.sql.ts';
import { iso, isoOrNull, ListQuery, Nullable, Timestamp, Uuid } from './common.ts';

export const SessionStatus = Type.Union([Type.Literal('active'), Type.Literal('ended')]);

export const Session = Type.Object(
  {
    id: Uuid,
    contact_id: Uuid,
    channel_id: Uuid,
    status: SessionStatus,
    started_at: Timestamp,
    last_activity_at: Timestamp,
    ended_at: Nullable(Timestamp),
    end_reason: Nullable(Type.String({ description: 'inactivity_timeout (the sweeper), resolved, closed_by_agent, spam, transferred, other (POST /sessions/{id}/close), contact_deleted (DELETE /contacts/{id}), contact_merged (two active sessions of one person on a channel when a LID-only contact is merged into its phone\'s contact)' })),
    timeout_minutes: Type.Integer({ description: 'Minutes without messages after which the session ends' }),
    message_count: Type.Integer(),
    messages_from_contact: Type.Integer(),
    messages_from_agent: Type.Integer(),
    first_response_seconds: Nullable(Type.Integer({ description: "From the contact's first message to the first reply" })),
    duration_seconds: Type.Integer({ description: 'Start to end; for an active session, start to the latest message' }),
    reply_window_until: Nullable(
      Type.String({
        format: 'date-time',
        description:
          "WhatsApp Cloud API channels: 24 hours after the contact's latest message through this channel (in any session); until then free-form replies go, after it only templates. Null for WAHA channels (no such window) and when the contact never wrote",
      }),
    ),
  },
  { title: 'Session' },
);

export const SessionListQuery = ListQuery({
  status: Type.Optional(SessionStatus),
  contact_id: Type.Optional(Uuid),
  channel_id: Type.Optional(Uuid),
});

export function presentSession(s: SessionRecord) {
  return {
    id: s.id,
    contact_id: s.contactId,
    channel_id: s.channelId,
    status: s.status,
    started_at: iso(s.startedAt),
    last_activity_at: iso(s.lastActivityAt),
    ended_at: isoOrNull(s.endedAt),
    end_reason: s.endReason,
    timeout_minutes: s.timeoutMinutes,
    message_count: s.messageCount,
    messages_from_contact: s.messagesFromContact,
    messages_from_agent: s.messagesFromAgent,
    first_response_seconds: s.firstResponseSeconds,
    duration_seconds: s.durationSeconds,
    reply_window_until: isoOrNull(s.replyWindowUntil),
  };
}
