// The event catalogue (contract.md §3): every domain event we emit, its aggregate, its version and
// the shape of its `data`. It is the single source for outbox rows, routing keys (= type),
// webhook subscription filters and the available-events list, so adding an event means adding it
// here and nowhere else. Payload keys are snake_case because they go on the wire as they are.
// Versions only ever add fields; a breaking change would be a new event name.
import { uuidv7 } from './ids.ts';
import type { MESSAGE_TYPES } from './inbound.ts';

export const EVENT_CATALOGUE = {
  'contact.created': { aggregate: 'contact', version: 1, description: 'A contact was created (first message from a new number, or through the API).' },
  'contact.updated': { aggregate: 'contact', version: 1, description: "A contact's name, email, tags, custom fields or attribution changed." },
  'contact.deleted': { aggregate: 'contact', version: 1, description: 'A contact was deleted.' },
  'contact.merged': { aggregate: 'contact', version: 1, description: 'A contact known by its WhatsApp LID alone was merged into the contact of its phone; carries the contact as it is now.' },
  'contact.status_changed': { aggregate: 'contact', version: 1, description: 'A contact moved to another status of a pipeline.' },
  'session.started': { aggregate: 'session', version: 1, description: 'A conversation session opened with a contact on a channel.' },
  'session.ended': { aggregate: 'session', version: 1, description: 'A conversation session ended (inactivity timeout, closed by an agent, resolved…), with its counters.' },
  'message.received': { aggregate: 'message', version: 1, description: 'An inbound message from a contact was stored.' },
  'message.sent': { aggregate: 'message', version: 1, description: 'An outbound message was accepted by the provider, or typed on the phone.' },
  'message.delivered': { aggregate: 'message', version: 1, description: "An outbound message reached the contact's device." },
  'message.read': { aggregate: 'message', version: 1, description: 'The contact read an outbound message.' },
  'message.played': { aggregate: 'message', version: 1, description: 'The contact played an outbound voice or video message.' },
  'message.failed': { aggregate: 'message', version: 1, description: 'An outbound message could not be delivered.' },
  'message.reacted': { aggregate: 'message', version: 1, description: 'The contact or the business reacted to a message, changed its reaction or removed it (emoji null).' },
  'message.edited': { aggregate: 'message', version: 1, description: 'The sender edited a message; carries the new and the previous text.' },
  'message.revoked': { aggregate: 'message', version: 1, description: 'The sender deleted a message for everyone; its text stays in the CRM for the record.' },
  'tracking.ad_click': { aggregate: 'tracking', version: 1, description: 'A message came from a click-to-WhatsApp ad; carries the ad fields.' },
  'channel.status_changed': { aggregate: 'channel', version: 1, description: 'A channel connection changed status (connecting, active, error, inactive).' },
  'pipeline.created': { aggregate: 'pipeline', version: 1, description: 'A pipeline was created with its statuses.' },
  'pipeline.updated': { aggregate: 'pipeline', version: 1, description: 'A pipeline was renamed, described, made or unmade the default, or gained a status; data is the whole pipeline now.' },
  'webhook.endpoint_disabled': { aggregate: 'webhook', version: 1, description: 'A webhook subscription was disabled (410 Gone, or failing for too long).' },
  'webhook.test': { aggregate: 'webhook', version: 1, description: 'A test event sent on request to one webhook subscription.' },
} as const satisfies Record<string, { aggregate: AggregateType; version: number; description: string }>;

export type AggregateType = 'contact' | 'session' | 'message' | 'channel' | 'pipeline' | 'webhook' | 'tracking';
export type EventType = keyof typeof EVENT_CATALOGUE;

export const EVENT_TYPES = Object.keys(EVENT_CATALOGUE) as EventType[];

export function isEventType(s: unknown): s is EventType {
  return typeof s === 'string' && Object.hasOwn(EVENT_CATALOGUE, s);
}

// ---- payloads -------------------------------------------------------------------------------
// Times are ISO 8601 strings; ids are UUIDs unless named `external_*` (provider ids).

export type AdAttribution = {
  source_type: 'ad' | 'post' | string;
  source_id: string | null;
  source_url: string | null;
  headline: string | null;
  body: string | null;
  media_type: string | null;
  image_url: string | null;
  video_url: string | null;
  thumbnail_url: string | null;
  ctwa_clid: string | null;
};

export type ContactData = {
  contact_id: string;
  name: string | null;
  phone: string | null;
  email: string | null;
  wa_id: string | null;
  tags: string[];
  custom_fields: Record<string, unknown>;
  source: string | null;
  ad_attribution: AdAttribution | null;
};

export type SessionEndReason = 'inactivity_timeout' | 'closed_by_agent' | 'resolved' | 'spam' | 'transferred' | 'other' | 'contact_deleted' | 'contact_merged';

export type SessionCounters = {
  message_count: number;
  messages_from_contact: number;
  messages_from_agent: number;
  first_response_seconds: number | null;
  duration_seconds: number;
  /** Time the contact waited for replies, summed over the session (answered waits only). */
  customer_wait_seconds: number | null;
};

export type MessageType = (typeof MESSAGE_TYPES)[number];
export type MessageStatus = 'queued' | 'pending' | 'sent' | 'delivered' | 'read' | 'played' | 'failed' | 'received';

export type MessageData = {
  message_id: string;
  contact_id: string;
  session_id: string | null;
  channel_id: string;
  direction: 'inbound' | 'outbound';
  from_me: boolean;
  type: MessageType;
  text: string | null;
  media: { url: string | null; mimetype: string | null; filename: string | null } | null;
  location: { latitude: number; longitude: number; name: string | null; address: string | null } | null;
  contact_card: Record<string, unknown> | null;
  external_id: string | null;
  status: MessageStatus;
  timestamp: string;
  reply_to_external_id: string | null;
};

/** A delivery-status change of an outbound message (delivered, read, played, failed). */
export type MessageStatusData = {
  message_id: string;
  contact_id: string;
  session_id: string | null;
  channel_id: string;
  external_id: string | null;
  status: MessageStatus;
  previous_status: MessageStatus;
  at: string;
};

/** The message a reaction, an edit or a deletion changed. */
export type MessageChangeData = {
  message_id: string;
  contact_id: string;
  session_id: string | null;
  channel_id: string;
  external_id: string | null;
  direction: 'inbound' | 'outbound';
  from_me: boolean;
};

export type EventPayloads = {
  'contact.created': ContactData;
  'contact.updated': ContactData & { changed_fields: string[] };
  'contact.deleted': { contact_id: string; phone: string | null; deleted_at: string };
  /** `contact_id` is the contact that remains; `merged_contact_id` is gone (the API answers 404 for it). */
  'contact.merged': ContactData & { merged_contact_id: string };
  'contact.status_changed': {
    contact_id: string;
    pipeline_id: string;
    status_id: string;
    status_name: string;
    previous_status_id: string | null;
    previous_status_name: string | null;
    notes: string | null;
    changed_by: string | null;
    /** Who `changed_by` names: a user, an API key, or the system (a consumer's automatic move). */
    changed_by_type: 'user' | 'api_key' | 'system';
    changed_at: string;
  };
  'session.started': { session_id: string; contact_id: string; channel_id: string; started_at: string; timeout_minutes: number };
  'session.ended': SessionCounters & {
    session_id: string;
    contact_id: string;
    channel_id: string;
    reason: SessionEndReason;
    started_at: string;
    ended_at: string;
    /** 'user:<id>' or 'api_key:<id>' for a manual close; null when the inactivity timer ended it. */
    closed_by: string | null;
  };
  'message.received': MessageData;
  'message.sent': MessageData;
  'message.delivered': MessageStatusData;
  'message.read': MessageStatusData;
  'message.played': MessageStatusData;
  'message.failed': MessageStatusData & { error: string; error_code: string | null };
  /** `by`: who reacted, the contact or the business (`me`); `emoji` null when the reaction was removed. */
  'message.reacted': MessageChangeData & { by: 'contact' | 'me'; emoji: string | null; previous_emoji: string | null; reacted_at: string };
  'message.edited': MessageChangeData & { text: string; previous_text: string | null; edited_at: string };
  'message.revoked': MessageChangeData & { revoked_at: string };
  'tracking.ad_click': AdAttribution & { contact_id: string; message_id: string; session_id: string | null; channel_id: string; clicked_at: string };
  'channel.status_changed': {
    channel_id: string;
    name: string;
    type: 'waha' | 'whatsapp_cloud';
    status: 'connecting' | 'active' | 'error' | 'inactive';
    previous_status: 'connecting' | 'active' | 'error' | 'inactive' | null;
    reason: string | null;
  };
  'pipeline.created': { pipeline_id: string; name: string; statuses: Array<{ status_id: string; name: string; position: number }> };
  'pipeline.updated': {
    pipeline_id: string;
    name: string;
    description: string | null;
    is_default: boolean;
    statuses: Array<{ status_id: string; name: string; kind: 'open' | 'active' | 'closed'; position: number }>;
    /** What this change touched: `name`, `description`, `is_default`, `statuses`. */
    changed: string[];
  };
  'webhook.endpoint_disabled': {
    subscription_id: string;
    url: string;
    reason: 'gone' | 'failing';
    last_status_code: number | null;
    last_error: string | null;
    failing_since: string | null;
  };
  'webhook.test': { subscription_id: string; message: string };
};

// Compile-time check that the catalogue and the payload map name exactly the same events.
type Same<A, B> = [A] extends [B] ? ([B] extends [A] ? true : never) : never;
const _catalogueMatchesPayloads: Same<EventType, keyof EventPayloads> = true;
void _catalogueMatchesPayloads;

// ---- envelope -------------------------------------------------------------------------------

/** What goes into the outbox, onto `domain.events` and (reshaped) to webhook subscribers. */
export type EventEnvelope<T extends EventType = EventType> = {
  [K in T]: {
    /** UUID v7: sorts by time, so the event log and cursors can use it as a tie-breaker. */
    id: string;
    type: K;
    version: number;
    occurred_at: string;
    project_id: string;
    aggregate_type: AggregateType;
    aggregate_id: string;
    data: EventPayloads[K];
  };
}[T];

export function newEvent<T extends EventType>(
  type: T,
  e: { projectId: string; aggregateId: string; data: EventPayloads[T]; occurredAt?: Date | string },
): EventEnvelope<T> {
  const spec = EVENT_CATALOGUE[type];
  const occurred = e.occurredAt === undefined ? new Date() : new Date(e.occurredAt);
  return {
    id: uuidv7(),
    type,
    version: spec.version,
    occurred_at: occurred.toISOString(),
    project_id: e.projectId,
    aggregate_type: spec.aggregate,
    aggregate_id: e.aggregateId,
    data: e.data,
  } as EventEnvelope<T>;
}
