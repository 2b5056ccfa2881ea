// The provider-agnostic shape of everything a WhatsApp provider tells us. The WAHA and Cloud API
// parsers produce these; the inbound processor consumes them without knowing which provider spoke.
// Parsers are pure: no clock, no I/O. Bad input raises ParseError and nothing else.

export type Provider = 'waha' | 'whatsapp_cloud';

export const MESSAGE_TYPES = [
  'text', 'image', 'video', 'audio', 'voice', 'document', 'sticker', 'location', 'contact',
  'reaction', 'interactive', 'button', 'template', 'unknown',
] as const;
// 'template' only for replies: a message template sent through the Cloud API (POST /messages).
// 'reaction' stays in the stored vocabulary, but parsers emit reactions as InboundReaction because
// they annotate an earlier message rather than start a new one.
export type MessageType = (typeof MESSAGE_TYPES)[number];

/** The other party of a conversation. At least one field is set. */
export type ContactRef = {
  /** E.164 with the leading '+'. */
  phone?: string;
  /** WhatsApp id: the phone's digits, no '+'. */
  waId?: string;
  /** A privacy id (`…@lid`); never a phone. Kept so it can be joined when the phone shows up. */
  lid?: string;
};

export type MediaRef = {
  /** Downloadable URL (WAHA). */
  url?: string;
  /** Provider media id, fetched later with the channel's token (Cloud API). */
  mediaId?: string;
  mimetype?: string;
  filename?: string;
  sha256?: string;
};

export type LocationData = { latitude: number; longitude: number; name?: string; address?: string };

export type ContactCard = { vcards: string[]; displayName?: string };

/** Click-to-WhatsApp ad attribution, keyed the way it appears in API and event data. */
export type AdAttribution = {
  source_type?: string;
  source_id?: string;
  source_url?: string;
  source_app?: string;
  ctwa_clid?: string;
  headline?: string;
  body?: string;
  media_type?: string;
  media_url?: string;
  thumbnail_url?: string;
  conversion_source?: string;
  conversion_data?: string;
  entry_point?: string;
  entry_point_app?: string;
  entry_point_external_source?: string;
};

// Every parsed event says which provider produced it and under which provider event name, so the
// processor can count it (inbound_events_total{provider,event,result}) without re-reading the body.
type Base = { provider: Provider; event: string };

export type InboundMessage = Base & {
  kind: 'message';
  /** The provider's message id exactly as received; unique per channel. */
  externalId: string;
  /**
   * The bare message id, the same whichever form the provider used (WAHA sends `false_<chat>_<ID>`
   * in one event and `<ID>` in another). Match references (acks, reactions, edits) on this.
   */
  messageKey: string;
  fromMe: boolean;
  contact: ContactRef;
  /** The contact's self-chosen name; only on messages from the contact, never our own name. */
  pushName?: string;
  type: MessageType;
  /** Body, or the caption of a media message. */
  text?: string;
  media?: MediaRef;
  location?: LocationData;
  contactCard?: ContactCard;
  replyToExternalId?: string;
  replyToKey?: string;
  /** Provider time of the message. */
  timestamp: Date;
  /** WAHA: `app` (typed on a phone), `api` (sent through WAHA)… */
  source?: string;
  ad?: AdAttribution;
  /** Delivery status carried on the message itself (WAHA `ack`), when present. */
  ackStatus?: MessageStatus;
  /** Stored with the message as-is, hence snake_case keys. */
  metadata: MessageMetadata;
};

export type MessageMetadata = {
  event: string;
  raw_type?: string;
  engine?: string;
  session?: string;
  [key: string]: unknown;
};

export type InboundStatus = Base & {
  kind: 'status';
  /** Id of the message whose status changed, as received. */
  externalId: string;
  messageKey: string;
  status: MessageStatus;
  fromMe?: boolean;
  /** Absent when the provider does not date the change (WAHA acks: the envelope time is used). */
  timestamp?: Date;
  error?: StatusError;
  recipient?: ContactRef;
  /**
   * Most likely the ack of a message in the business's own chat (GOWS and NOWEB name the chat in
   * `from`, us, and leave `to` null): with no such message stored it is skipped as `own_chat`, not
   * retried; should the message be stored after all, the ack applies to it.
   */
  ownChatIfMissing?: boolean;
};

export type StatusError = { code?: number | string; title?: string; message?: string; details?: string };

/**
 * A delivery failure as people read it, whoever stored it — a provider's failed status ({code,
 * title?, message?, details?}, Meta's code a number) or our sender ({message, code, attempts}):
 * the code as a string, and always some words. The API's `error` and `message.failed` use it.
 */
export type FailureView = { code: string | null; title: string | null; message: string; details: string | null };

export function failureView(e: unknown): FailureView {
  const title = loose.str(e, 'title') ?? null;
  const details = loose.str(e, 'details') ?? null;
  const code = isRecord(e) && typeof e.code === 'number' ? String(e.code) : (loose.str(e, 'code') ?? null);
  return { code, title, message: loose.str(e, 'message') ?? title ?? details ?? 'the provider reported a delivery failure', details };
}

export type InboundReaction = Base & {
  kind: 'reaction';
  externalId?: string;
  targetExternalId: string;
  targetKey: string;
  /** Empty string: the reaction was removed. */
  emoji: string;
  fromMe: boolean;
  /** Who reacted, when it was not us (our own reaction names no one: WAHA may not say the chat). */
  contact?: ContactRef;
  timestamp?: Date;
};

export type InboundRevoke = Base & {
  kind: 'revoke';
  /** Id of the revoke action itself (may equal the target on WEBJS). */
  externalId?: string;
  targetExternalId: string;
  targetKey: string;
  fromMe: boolean;
  contact: ContactRef;
  timestamp?: Date;
};

export type InboundEdit = Base & {
  kind: 'edit';
  externalId?: string;
  targetExternalId: string;
  targetKey: string;
  text: string;
  fromMe: boolean;
  contact: ContactRef;
  timestamp?: Date;
};

export const CHANNEL_STATES = ['active', 'connecting', 'error', 'inactive'] as const;
export type ChannelState = (typeof CHANNEL_STATES)[number];

export type ChannelStatus = Base & {
  kind: 'channel_status';
  status: ChannelState;
  /** The provider's own word for it, e.g. WAHA `SCAN_QR_CODE`. */
  providerStatus: string;
  timestamp?: Date;
};

export const IGNORE_REASONS = [
  'group', 'status', 'newsletter', 'broadcast', // not contacts: skipped but counted
  'unknown_address', // no phone or LID could be found for the other party
  'unhandled_event', // an event we acknowledge and count but do not act on
  'unknown_status', // a status or session state we do not recognise
  'provider_error', // the provider reported an error instead of content
  'other_phone_number', // a Cloud API change addressed to another business number than the channel's
  'malformed', // one item of a body that carries several could not be read; the others go on, the body is parked for it
  'protocol_message', // a provider's control message delivered as a message (a deletion, an edit, a sync): no content of its own
  'own_chat', // a WAHA message (or what refers to one) in the business's own chat ("Message yourself"): not a contact
] as const;
export type IgnoreReason = (typeof IGNORE_REASONS)[number];

export type Ignored = Base & { kind: 'ignored'; reason: IgnoreReason; detail?: string };

export type InboundEvent =
  | InboundMessage
  | InboundStatus
  | InboundReaction
  | InboundRevoke
  | InboundEdit
  | ChannelStatus
  | Ignored;

// ---- message status: a small explicit state machine --------------------------------------------

export const MESSAGE_STATUSES = ['pending', 'sent', 'delivered', 'read', 'played', 'failed'] as const;
export type MessageStatus = (typeof MESSAGE_STATUSES)[number];

/** Rank of the progressing statuses; `failed` sits outside the line. */
export const STATUS_ORDER = { pending: 0, sent: 1, delivered: 2, read: 3, played: 4 } as const;

/**
 * Whether a message may move from `from` to `to`. Statuses only move forward, because providers
 * deliver them late and out of order (Cloud API retries for days; WAHA acks race their message).
 * - A message with no status yet accepts anything.
 * - `failed` is terminal: nothing leaves it.
 * - `failed` is accepted from pending, sent and delivered, but not once the recipient has read or
 *   played the message — a late failure cannot undo what the recipient already saw.
 * - Otherwise only a higher rank is accepted; equal is not a move.
 */
export function isForward(from: MessageStatus | null | undefined, to: MessageStatus): boolean {
  if (from == null) return true;
  if (from === 'failed') return false;
  if (to === 'failed') return from !== 'read' && from !== 'played';
  return STATUS_ORDER[to] > STATUS_ORDER[from];
}

// ---- malformed input --------------------------------------------------------------------------

/** The only exception a parser throws for bad input; `reason` says what was wrong and where. */
export class ParseError extends Error {
  constructor(readonly reason: string) {
    super(`cannot parse provider payload: ${reason}`);
    this.name = 'ParseError';
  }
}

// Readers for untrusted JSON. `need*` throw ParseError when the field is missing or mistyped;
// `opt*` throw only when it is present with the wrong type (null counts as absent, since providers
// send null for "none").

export type Json = Record<string, unknown>;

export const isRecord = (v: unknown): v is Json =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'array' : typeof v;
}

export function needRecord(v: unknown, path: string): Json {
  if (!isRecord(v)) throw new ParseError(`${path} must be an object, got ${typeName(v)}`);
  return v;
}

export function optRecord(o: Json, key: string, path: string): Json | undefined {
  const v = o[key];
  if (v == null) return undefined;
  return needRecord(v, `${path}.${key}`);
}

export function needString(o: Json, key: string, path: string): string {
  const v = o[key];
  if (typeof v !== 'string' || v === '') throw new ParseError(`${path}.${key} must be a non-empty string, got ${typeName(v)}`);
  return v;
}

export function optString(o: Json, key: string, path: string): string | undefined {
  const v = o[key];
  if (v == null) return undefined;
  if (typeof v !== 'string') throw new ParseError(`${path}.${key} must be a string, got ${typeName(v)}`);
  return v;
}

export function optBoolean(o: Json, key: string, path: string): boolean | undefined {
  const v = o[key];
  if (v == null) return undefined;
  if (typeof v !== 'boolean') throw new ParseError(`${path}.${key} must be a boolean, got ${typeName(v)}`);
  return v;
}

export function optNumber(o: Json, key: string, path: string): number | undefined {
  const v = o[key];
  if (v == null) return undefined;
  if (typeof v !== 'number' || !Number.isFinite(v)) throw new ParseError(`${path}.${key} must be a number, got ${typeName(v)}`);
  return v;
}

export function optArray(o: Json, key: string, path: string): unknown[] | undefined {
  const v = o[key];
  if (v == null) return undefined;
  if (!Array.isArray(v)) throw new ParseError(`${path}.${key} must be an array, got ${typeName(v)}`);
  return v;
}

/** Lenient reads for engine-raw data that may change shape at any time: wrong types read as absent. */
export const loose = {
  rec: (o: unknown, key: string): Json | undefined => (isRecord(o) && isRecord(o[key]) ? (o[key] as Json) : undefined),
  list: (o: unknown, key: string): unknown[] | undefined => (isRecord(o) && Array.isArray(o[key]) ? (o[key] as unknown[]) : undefined),
  str: (o: unknown, key: string): string | undefined =>
    isRecord(o) && typeof o[key] === 'string' && o[key] !== '' ? (o[key] as string) : undefined,
  num: (o: unknown, key: string): number | undefined => {
    if (!isRecord(o)) return undefined;
    const v = o[key];
    const n = typeof v === 'string' && v.trim() !== '' ? Number(v) : v;
    return typeof n === 'number' && Number.isFinite(n) ? n : undefined;
  },
  bool: (o: unknown, key: string): boolean | undefined =>
    isRecord(o) && typeof o[key] === 'boolean' ? (o[key] as boolean) : undefined,
};

/** A copy without undefined values, so results compare and serialise cleanly. */
export function compact<T extends object>(o: T): T {
  const out = {} as T;
  for (const k of Object.keys(o) as Array<keyof T>) if (o[k] !== undefined) out[k] = o[k];
  return out;
}

/**
 * The latest provider time we store: the end of year 9999. Past it a date has no plain ISO 8601
 * form and PostgreSQL refuses the expanded one (a milliseconds value read as seconds lands in the
 * year 11476): such a webhook is a parse error, not a transaction that fails on every retry.
 */
export const LATEST_PROVIDER_TIME_MS = Date.UTC(9999, 11, 31, 23, 59, 59, 999);

/**
 * A provider's unix time: seconds, or milliseconds sent where seconds belong. The two differ by
 * three orders of magnitude; anything past 1e11 is already milliseconds (1e11 seconds is the year
 * 5138), which also covers WAHA's envelope, whose timestamp is in milliseconds.
 */
export function fromUnixTime(n: number): Date {
  return new Date(n > 1e11 ? n : Math.round(n * 1000));
}

/** A provider time we can store: a real date after 1970 and within LATEST_PROVIDER_TIME_MS. */
export function isStorableTime(d: Date): boolean {
  const t = d.getTime();
  return t > 0 && t <= LATEST_PROVIDER_TIME_MS;
}
