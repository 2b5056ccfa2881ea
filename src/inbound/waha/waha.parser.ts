// WAHA webhook body → normalised inbound events, for all three engines (GOWS, NOWEB, WEBJS).
// The envelope and WAHA's own normalised fields are validated strictly (a wrong type there is a
// malformed request); the engine-raw `_data` is read leniently (see waha-message.ts).
import {
  type ChannelState, type ContactRef, type InboundEvent, type InboundMessage, type InboundReaction,
  type Json, type MessageStatus, ParseError, compact, loose, needRecord, needString, optBoolean,
  fromUnixTime, isRecord, isStorableTime, optNumber, optRecord, optString,
} from '../../domain/inbound.ts';
import { lookupTable } from '../../domain/lookup.ts';
import { providedName } from '../../domain/text.ts';
import { inOwnChat, notAContact, resolveAckRecipient, resolveWahaContact, wahaMessageKey } from './waha-jid.ts';
import { CONTROL_TYPES, rawContent, readWahaContent } from './waha-message.ts';

export type WahaEngine = 'WEBJS' | 'NOWEB' | 'GOWS';

export type WahaEnvelope = {
  /** `evt_…` on newer WAHA versions. */
  id?: string;
  event: string;
  session?: string;
  engine?: string;
  /** When WAHA emitted the event (the envelope carries milliseconds). */
  timestamp?: Date;
  /** Our own WhatsApp id (`…@c.us`). */
  me?: string;
  /** Our own LID (`…@lid`), when WAHA gives it. */
  meLid?: string;
};

// WAHA ack codes: -1 ERROR, 0 PENDING, 1 SERVER, 2 DEVICE, 3 READ, 4 PLAYED.
const ACK_CODES: Record<number, MessageStatus> = { [-1]: 'failed', 0: 'pending', 1: 'sent', 2: 'delivered', 3: 'read', 4: 'played' };
const ACK_NAMES = lookupTable<MessageStatus>({ ERROR: 'failed', PENDING: 'pending', SERVER: 'sent', DEVICE: 'delivered', READ: 'read', PLAYED: 'played' });

const SESSION_STATES = lookupTable<ChannelState>({
  WORKING: 'active',
  STARTING: 'connecting',
  SCAN_QR_CODE: 'connecting',
  // Newer WAHA pairing steps; the session is still being set up.
  PASSKEY_REQUIRED: 'connecting',
  PASSKEY_CONFIRMATION_REQUIRED: 'connecting',
  FAILED: 'error',
  STOPPED: 'inactive',
});

/** Reads the envelope only: enough for the ingress to log, count and route the event. */
export function parseWahaEnvelope(body: unknown): WahaEnvelope {
  const b = needRecord(body, 'body');
  const ts = optNumber(b, 'timestamp', 'body');
  const timestamp = ts !== undefined && ts > 0 ? fromUnixTime(ts) : undefined;
  if (timestamp && !isStorableTime(timestamp)) throw new ParseError(`body.timestamp is out of range: ${ts}`);
  return compact<WahaEnvelope>({
    id: optString(b, 'id', 'body'),
    event: needString(b, 'event', 'body'),
    session: optString(b, 'session', 'body'),
    engine: optString(b, 'engine', 'body') ?? loose.str(loose.rec(b, 'environment'), 'engine'),
    timestamp,
    me: loose.str(loose.rec(b, 'me'), 'id'),
    meLid: loose.str(loose.rec(b, 'me'), 'lid'),
  });
}

export function parseWahaEvent(body: unknown): InboundEvent[] {
  const env = parseWahaEnvelope(body);
  const b = body as Json;
  switch (env.event) {
    case 'message':
    case 'message.any':
      return [parseMessage(env, needRecord(b.payload, 'payload'))];
    case 'message.ack':
      return [parseAck(env, needRecord(b.payload, 'payload'))];
    case 'message.reaction':
      return [parseReaction(env, needRecord(b.payload, 'payload'))];
    case 'message.revoked':
      return [parseRevoke(env, needRecord(b.payload, 'payload'))];
    case 'message.edited':
      return [parseEdit(env, needRecord(b.payload, 'payload'))];
    case 'session.status':
      return [parseSession(env, needRecord(b.payload, 'payload'))];
    default:
      return [{ kind: 'ignored', provider: 'waha', event: env.event, reason: 'unhandled_event' }];
  }
}

function parseMessage(env: WahaEnvelope, p: Json): InboundEvent {
  const path = 'payload';
  const externalId = needString(p, 'id', path);
  const fromMe = readFromMe(p, externalId, path);
  checkAddresses(p, path);
  const who = resolveWahaContact(p, fromMe);
  if (!who.ok) return { kind: 'ignored', provider: 'waha', event: env.event, reason: who.reason, detail: who.detail };
  const content = readWahaContent(p, path);
  // NOWEB also delivers the protocol messages behind a deletion or an edit (and our phone's own
  // sync messages, addressed to our own number) as messages: not something anyone said. The
  // deletion or edit itself arrives as message.revoked / message.edited.
  if (content.rawType && CONTROL_TYPES.has(content.rawType)) {
    return { kind: 'ignored', provider: 'waha', event: env.event, reason: 'protocol_message', detail: content.rawType };
  }
  if (inOwnChat(p, own(env), who.contact, 1)) return ownChat(env);

  const timestamp = readTime(p, path) ?? env.timestamp;
  if (!timestamp) throw new ParseError(`${path}.timestamp is missing`);

  // NOWEB used to deliver reactions as ordinary messages; they annotate a message, not add one.
  if (content.type === 'reaction') {
    const reaction = reactionFromContent(env, p, externalId, fromMe, who.contact, timestamp);
    if (reaction) return reaction;
  }

  const data = loose.rec(p, '_data');
  const ack = readAck(p, path);
  const message: InboundMessage = {
    kind: 'message',
    provider: 'waha',
    event: env.event,
    externalId,
    messageKey: wahaMessageKey(externalId),
    fromMe,
    contact: who.contact,
    // On our own messages every engine reports OUR push name; it must never reach the contact.
    pushName: fromMe ? undefined : readPushName(data),
    type: content.type,
    text: content.text,
    media: content.media,
    location: content.location,
    contactCard: content.contactCard,
    replyToExternalId: content.replyToExternalId,
    replyToKey: content.replyToExternalId ? wahaMessageKey(content.replyToExternalId) : undefined,
    timestamp,
    source: optString(p, 'source', path),
    ad: content.ad,
    ackStatus: ack,
    metadata: compact({
      event: env.event,
      raw_type: content.rawType,
      engine: env.engine,
      session: env.session,
      media_error: content.mediaError,
    }),
  };
  return compact(message);
}

function reactionFromContent(
  env: WahaEnvelope, p: Json, externalId: string, fromMe: boolean, contact: ContactRef, timestamp: Date,
): InboundReaction | undefined {
  const { value } = rawContent(p);
  const target = loose.str(loose.rec(value, 'key'), 'id');
  if (!target) return undefined;
  return {
    kind: 'reaction', provider: 'waha', event: env.event, externalId, targetExternalId: target,
    targetKey: wahaMessageKey(target), emoji: loose.str(value, 'text') ?? '', fromMe, contact, timestamp,
  };
}

function parseAck(env: WahaEnvelope, p: Json): InboundEvent {
  const path = 'payload';
  const externalId = needString(p, 'id', path);
  checkAddresses(p, path);
  const status = readAck(p, path);
  if (!status) {
    return { kind: 'ignored', provider: 'waha', event: env.event, reason: 'unknown_status', detail: String(p.ack ?? p.ackName) };
  }
  // Acks of group, Status or channel posts refer to messages we never stored. Either side may name
  // that chat: WEBJS may put us in `from` by our LID, which is not the `me` id the envelope gives.
  const elsewhere = notAContact(loose.str(p, 'from'), loose.str(p, 'to'));
  if (elsewhere) return { kind: 'ignored', provider: 'waha', event: env.event, ...elsewhere };
  const who = resolveAckRecipient(p, env.me);
  if (!who.ok && who.reason !== 'unknown_address') {
    return { kind: 'ignored', provider: 'waha', event: env.event, reason: who.reason, detail: who.detail };
  }
  // Not by the recipient: WEBJS may name us by our LID in `from` on an ack of any chat of ours, so
  // both sides must be us.
  if (inOwnChat(p, own(env), undefined, 2)) return ownChat(env);
  // GOWS and NOWEB name the chat in `from` and, in a chat with one person, leave `to` null: us
  // alone in `from` is most likely our own chat, whose messages are never stored. Not certain (a
  // receipt from a device of ours, a LID the engine cannot place): skipped only when no message
  // has this id, so a real ack is never lost and our own chat's is not retried for hours.
  const ownChatIfMissing = (env.engine === 'GOWS' || env.engine === 'NOWEB') && inOwnChat(p, own(env), undefined, 1);
  return compact({
    kind: 'status' as const,
    provider: 'waha' as const,
    event: env.event,
    externalId,
    messageKey: wahaMessageKey(externalId),
    status,
    fromMe: optBoolean(p, 'fromMe', path),
    // When the webhook was sent, not the payload's `timestamp`: WEBJS sends the acked message whole,
    // so its timestamp is when that message was sent (GOWS and NOWEB send none).
    timestamp: env.timestamp,
    recipient: who.ok ? who.contact : undefined,
    ownChatIfMissing: ownChatIfMissing || undefined,
  });
}

function parseReaction(env: WahaEnvelope, p: Json): InboundEvent {
  const path = 'payload';
  const reaction = needRecord(p.reaction, `${path}.reaction`);
  const target = needString(reaction, 'messageId', `${path}.reaction`);
  const id = optString(p, 'id', path);
  const fromMe = readFromMe(p, id ?? '', path);
  // A reaction in a group, on a Status post…: its target was never stored. Either side may name
  // that chat (ours: GOWS and NOWEB put it in `from`, WEBJS in `to`, with us on the other side).
  const elsewhere = notAContact(loose.str(p, 'from'), loose.str(p, 'to'));
  if (elsewhere) return { kind: 'ignored', provider: 'waha', event: env.event, ...elsewhere };
  const who = resolveWahaContact(p, fromMe);
  // Our own reaction is recorded as ours whatever the chat: GOWS and NOWEB send it with the chat
  // in `from` and `to` null, and no _data.
  if (!who.ok && !fromMe) return { kind: 'ignored', provider: 'waha', event: env.event, reason: who.reason, detail: who.detail };
  // Ours in our own chat: GOWS and NOWEB name the chat (us) in `from` alone; WEBJS names the
  // reactor there (us, in any chat), so from WEBJS or an engine not said, both sides must be us.
  const chatInFrom = env.engine === 'GOWS' || env.engine === 'NOWEB';
  if (inOwnChat(p, own(env), who.ok ? who.contact : undefined, chatInFrom ? 1 : 2)) return ownChat(env);
  return compact<InboundReaction>({
    kind: 'reaction',
    provider: 'waha',
    event: env.event,
    externalId: id,
    targetExternalId: target,
    targetKey: wahaMessageKey(target),
    emoji: optString(reaction, 'text', `${path}.reaction`) ?? '',
    fromMe,
    contact: who.ok ? who.contact : undefined,
    timestamp: readTime(p, path) ?? env.timestamp,
  });
}

function parseRevoke(env: WahaEnvelope, p: Json): InboundEvent {
  const path = 'payload';
  const after = optRecord(p, 'after', path);
  const before = optRecord(p, 'before', path);
  const base = after ?? before;
  const basePath = after ? `${path}.after` : `${path}.before`;
  const baseId = base ? optString(base, 'id', basePath) : undefined;
  // `revokedMessageId` names the deleted message; `after.id` is the revoke action (equal on WEBJS).
  const target = optString(p, 'revokedMessageId', path) ?? (before && optString(before, 'id', `${path}.before`)) ?? baseId;
  if (!target) throw new ParseError(`${path} names no revoked message (revokedMessageId, before.id or after.id)`);
  return editLike(env, base ?? {}, basePath, baseId, target, (common) => ({ ...common, kind: 'revoke' as const }));
}

function parseEdit(env: WahaEnvelope, p: Json): InboundEvent {
  const path = 'payload';
  const id = optString(p, 'id', path);
  const target = optString(p, 'editedMessageId', path) ?? id;
  if (!target) throw new ParseError(`${path} names no edited message (editedMessageId or id)`);
  // An edit is its new text: one without it is not an edit we can apply (and not an empty message).
  // WhatsApp does not let a text be edited to nothing; GOWS and NOWEB send `""` when WAHA could not
  // read the new text, which must not wipe the old one.
  const text = optString(p, 'body', path);
  if (!text) throw new ParseError(`${path}.body is ${text === undefined ? 'missing' : 'empty'}: an edit names its new text`);
  return editLike(env, p, path, id, target, (common) => ({ ...common, kind: 'edit' as const, text }));
}

type EditCommon = {
  provider: 'waha'; event: string; externalId?: string; targetExternalId: string; targetKey: string;
  fromMe: boolean; contact: ContactRef; timestamp?: Date;
};

/** Revokes and edits share their addressing: the target message, who did it, and when. */
function editLike(
  env: WahaEnvelope, base: Json, path: string, id: string | undefined, target: string,
  build: (c: EditCommon) => InboundEvent,
): InboundEvent {
  const fromMe = readFromMe(base, id ?? target, path, false);
  const who = resolveWahaContact(base, fromMe);
  // Applying one needs the target message only (it is found by its key): a payload that names no
  // chat at all (a WEBJS deletion may carry only the deleted message's id) is applied by that. One
  // whose chat we cannot read (a group, Status, a newsletter, a broadcast list, a server we do not
  // know) is skipped as its message was: that target was never stored.
  if (!who.ok) {
    const [from, to] = [loose.str(base, 'from'), loose.str(base, 'to')];
    const namesNoChat = who.reason === 'unknown_address' && from === undefined && to === undefined;
    // The side that names a group (…) may not be the one read for the contact: that one says why.
    const skip = who.reason === 'unknown_address' ? (notAContact(from, to) ?? who) : who;
    if (!namesNoChat) return { kind: 'ignored', provider: 'waha', event: env.event, reason: skip.reason, detail: skip.detail };
  }
  if (inOwnChat(base, own(env), who.ok ? who.contact : undefined, 2)) return ownChat(env);
  return compact(build({
    provider: 'waha',
    event: env.event,
    externalId: id,
    targetExternalId: target,
    targetKey: wahaMessageKey(target),
    fromMe,
    contact: who.ok ? who.contact : {},
    timestamp: readTime(base, path) ?? env.timestamp,
  }));
}

function parseSession(env: WahaEnvelope, p: Json): InboundEvent {
  const status = needString(p, 'status', 'payload');
  const state = SESSION_STATES[status];
  if (!state) return { kind: 'ignored', provider: 'waha', event: env.event, reason: 'unknown_status', detail: status };
  return compact({
    kind: 'channel_status' as const, provider: 'waha' as const, event: env.event,
    status: state, providerStatus: status, timestamp: env.timestamp,
  });
}

// ---- field readers --------------------------------------------------------------------------

const own = (env: WahaEnvelope) => ({ id: env.me, lid: env.meLid });

/**
 * A message (or an ack, a reaction, an edit, a deletion) in the business's own chat: skipped and
 * counted, so the business never becomes a contact of its own, and what refers to such a message
 * (never stored) does not wait for it.
 */
const ownChat = (env: WahaEnvelope): InboundEvent => compact({ kind: 'ignored' as const, provider: 'waha' as const, event: env.event, reason: 'own_chat' as const, detail: env.me ?? env.meLid });

/** `from`/`to` are WAHA's own fields: a wrong type there is a malformed body, not a missing contact. */
function checkAddresses(p: Json, path: string): void {
  optString(p, 'from', path);
  optString(p, 'to', path);
}

/** `fromMe`, else the engine's own flag, else the `true_`/`false_` prefix of the serialised id. */
function readFromMe(p: Json, id: string, path: string, required = true): boolean {
  const data = loose.rec(p, '_data');
  const v =
    optBoolean(p, 'fromMe', path) ??
    loose.bool(loose.rec(data, 'Info'), 'IsFromMe') ??
    loose.bool(loose.rec(data, 'key'), 'fromMe') ??
    (id.startsWith('true_') ? true : id.startsWith('false_') ? false : undefined);
  if (v === undefined && required) throw new ParseError(`${path}.fromMe is missing`);
  return v ?? false;
}

/**
 * The sender's push name (GOWS `Info.PushName`, NOWEB `pushName`, WEBJS `notifyName`): a blank one
 * (spaces, invisible characters) is no name, as if absent; a longer one than the API takes is cut.
 */
function readPushName(data: Json | undefined): string | undefined {
  for (const name of [loose.str(loose.rec(data, 'Info'), 'PushName'), loose.str(data, 'pushName'), loose.str(data, 'notifyName')]) {
    const usable = providedName(name);
    if (usable) return usable;
  }
  return undefined;
}

function readAck(p: Json, path: string): MessageStatus | undefined {
  const code = optNumber(p, 'ack', path);
  const name = optString(p, 'ackName', path);
  return (code !== undefined ? ACK_CODES[code] : undefined) ?? (name ? ACK_NAMES[name] : undefined);
}

/**
 * WAHA message time is unix seconds (fractional on reactions); accept a numeric string too, and the
 * protobuf Long NOWEB may pass through (`{low, high, unsigned}`). A 0 (an engine that does not know
 * the time) says nothing: the caller takes the envelope's time, as for a missing one, rather than
 * parking the message.
 */
function readTime(o: Json, path: string): Date | undefined {
  const v = fromLong(o.timestamp) ?? o.timestamp;
  if (v == null || v === 0 || v === '0') return undefined;
  const n = typeof v === 'string' && /^\d+(\.\d+)?$/.test(v) ? Number(v) : v;
  const d = typeof n === 'number' && n > 0 ? fromUnixTime(n) : undefined;
  if (!d || !isStorableTime(d)) throw new ParseError(`${path}.timestamp must be unix seconds, got ${JSON.stringify(o.timestamp)}`);
  return d;
}

const INT32 = (x: unknown): x is number => typeof x === 'number' && Number.isInteger(x) && x >= -(2 ** 31) && x < 2 ** 32;

/**
 * The number a protobuf Long (Long.js, as Baileys leaves it in NOWEB's payloads) holds: `low` and
 * `high` are its two 32-bit halves. Anything else: undefined.
 */
function fromLong(v: unknown): number | undefined {
  if (!isRecord(v) || !INT32(v.low) || !INT32(v.high)) return undefined;
  const high = v.unsigned === true ? v.high >>> 0 : v.high | 0;
  return high * 2 ** 32 + (v.low >>> 0);
}
