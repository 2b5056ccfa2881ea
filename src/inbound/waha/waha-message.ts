// What a WAHA message says: its type, text, media, location, vCards, reply and ad context.
// WAHA's normalised fields (body, media, location, vCards, replyTo) come first; the engine's raw
// `_data` fills the gaps. `_data` is read leniently because WAHA documents it as "may change at any
// time": a surprise there must degrade to less detail, never to a lost message.
import {
  type AdAttribution, type ContactCard, type Json, type LocationData, type MediaRef, type MessageType,
  compact, isRecord, loose, optArray, optRecord, optString,
} from '../../domain/inbound.ts';
import { lookupTable } from '../../domain/lookup.ts';

export type WahaContent = {
  type: MessageType;
  rawType?: string;
  text?: string;
  media?: MediaRef;
  mediaError?: unknown;
  location?: LocationData;
  contactCard?: ContactCard;
  replyToExternalId?: string;
  ad?: AdAttribution;
};

// Proto message keys (GOWS and NOWEB share them) → our type. Audio is split by its PTT flag.
const CONTENT_TYPES = lookupTable<MessageType>({
  conversation: 'text', extendedTextMessage: 'text', imageMessage: 'image', videoMessage: 'video',
  ptvMessage: 'video', audioMessage: 'audio', documentMessage: 'document', stickerMessage: 'sticker',
  locationMessage: 'location', liveLocationMessage: 'location', contactMessage: 'contact',
  contactsArrayMessage: 'contact', reactionMessage: 'reaction',
});
// GOWS `_data.Info.MediaType`.
const GOWS_MEDIA_TYPES = lookupTable<MessageType>({
  image: 'image', video: 'video', gif: 'video', audio: 'audio', ptt: 'voice', document: 'document',
  sticker: 'sticker', location: 'location', livelocation: 'location', vcard: 'contact',
  contact_array: 'contact', url: 'text',
});
// WEBJS `_data.type`.
const WEBJS_TYPES = lookupTable<MessageType>({
  chat: 'text', image: 'image', video: 'video', audio: 'audio', ptt: 'voice', document: 'document',
  sticker: 'sticker', location: 'location', vcard: 'contact', multi_vcard: 'contact',
});
// Keys that ride along with the content without being it.
const NOT_CONTENT = new Set(['messageContextInfo', 'senderKeyDistributionMessage']);
// Envelopes around the real content (disappearing chats, view-once, captioned documents, a photo
// of an album, a message that mentions a group, an animated sticker, a message to a bot).
const WRAPPERS = new Set([
  'ephemeralMessage', 'viewOnceMessage', 'viewOnceMessageV2', 'viewOnceMessageV2Extension',
  'documentWithCaptionMessage', 'associatedChildMessage', 'groupMentionedMessage', 'lottieStickerMessage',
  'botInvokeMessage',
]);
const MEDIA_TYPES = new Set<MessageType>(['image', 'video', 'audio', 'voice', 'document', 'sticker']);
// Types whose WAHA `body` is not human text: WEBJS puts a thumbnail in a location's body and the
// vCard itself in a contact's body.
const BODY_IS_NOT_TEXT = new Set<MessageType>(['location', 'contact', 'sticker', 'reaction']);

/**
 * Raw types of messages that carry no content of a conversation. NOWEB delivers the protocol
 * messages behind a deletion, an edit, a setting or a history sync (GOWS filters them out); WEBJS
 * delivers WhatsApp's own notices in the chat — "security code changed" (`e2e_notification`), a
 * missed-call entry (`call_log`), business and group notices, a message already deleted.
 */
export const CONTROL_TYPES: ReadonlySet<string> = new Set([
  'protocolMessage', 'editedMessage',
  'e2e_notification', 'notification', 'notification_template', 'call_log', 'gp2', 'protocol',
  'broadcast_notification', 'revoked',
]);

// Polls, button and list answers: WAHA leaves their `body` empty, and their words are here (the
// proto message of GOWS and NOWEB; a WEBJS poll has its question in `_data.pollName`).
const WORDS: Record<string, (v: unknown) => string | undefined> = {
  pollCreationMessage: (v) => loose.str(v, 'name'),
  pollCreationMessageV2: (v) => loose.str(v, 'name'),
  pollCreationMessageV3: (v) => loose.str(v, 'name'),
  buttonsResponseMessage: (v) => loose.str(v, 'selectedDisplayText'),
  listResponseMessage: (v) => loose.str(v, 'title'),
  templateButtonReplyMessage: (v) => loose.str(v, 'selectedDisplayText'),
  interactiveResponseMessage: (v) => loose.str(loose.rec(v, 'body'), 'text'),
};
const wordsOf = (key: string | undefined, value: unknown): string | undefined =>
  key && Object.hasOwn(WORDS, key) ? WORDS[key](value) : undefined;

/** The content message inside GOWS `_data.Message` / NOWEB `_data.message`, unwrapped. */
export function rawContent(p: Json): { key?: string; value?: unknown } {
  const data = loose.rec(p, '_data');
  let msg = loose.rec(data, 'Message') ?? loose.rec(data, 'message');
  for (let depth = 0; msg && depth < 5; depth++) {
    const key = Object.keys(msg).find((k) => !NOT_CONTENT.has(k) && msg![k] != null);
    if (!key) return {};
    const inner = WRAPPERS.has(key) ? loose.rec(msg[key], 'message') : undefined;
    if (!inner) return { key, value: msg[key] };
    msg = inner;
  }
  return {};
}

export function readWahaContent(p: Json, path: string): WahaContent {
  const data = loose.rec(p, '_data');
  const { key, value } = rawContent(p);
  const { type, rawType } = detectType(p, data, key, value);

  const body = optString(p, 'body', path);
  const caption = loose.str(value, 'caption') ?? loose.str(value, 'text') ?? (typeof value === 'string' ? value : undefined);
  const text = BODY_IS_NOT_TEXT.has(type) ? undefined : body || caption || wordsOf(key, value) || loose.str(data, 'pollName');

  const media = optRecord(p, 'media', path);
  const hasMedia = p.hasMedia === true || media !== undefined;
  // WEBJS keeps a file's type and name in `_data` too: WAHA's `media` is missing when it did not
  // download the file.
  const mediaRef = MEDIA_TYPES.has(type) || hasMedia
    ? compact<MediaRef>({
        url: loose.str(media, 'url'),
        mimetype: loose.str(media, 'mimetype') ?? loose.str(value, 'mimetype') ?? loose.str(data, 'mimetype'),
        filename: loose.str(media, 'filename') ?? loose.str(value, 'fileName') ?? loose.str(data, 'filename'),
      })
    : undefined;

  const contextInfo = loose.rec(value, 'contextInfo');
  const replyTo = optRecord(p, 'replyTo', path);
  const replyToExternalId =
    (replyTo && optString(replyTo, 'id', `${path}.replyTo`)) ||
    loose.str(contextInfo, 'stanzaId') || loose.str(contextInfo, 'stanzaID') || undefined;

  return compact<WahaContent>({
    type,
    rawType,
    text,
    media: mediaRef,
    mediaError: media?.error ?? undefined,
    location: readLocation(p, path, value),
    contactCard: readContactCard(p, path, key, value),
    replyToExternalId,
    ad: adFromContextInfo(contextInfo) ?? adFromCtwaContext(loose.rec(data, 'ctwaContext')),
  });
}

function detectType(p: Json, data: Json | undefined, key: string | undefined, value: unknown): { type: MessageType; rawType?: string } {
  const mediaType = loose.str(loose.rec(data, 'Info'), 'MediaType');
  const webType = loose.str(data, 'type');
  if (key && CONTENT_TYPES[key]) {
    const ptt = loose.bool(value, 'PTT') ?? loose.bool(value, 'ptt') ?? mediaType === 'ptt';
    return { type: key === 'audioMessage' && ptt ? 'voice' : CONTENT_TYPES[key], rawType: key };
  }
  if (mediaType && GOWS_MEDIA_TYPES[mediaType]) return { type: GOWS_MEDIA_TYPES[mediaType], rawType: mediaType };
  if (webType && WEBJS_TYPES[webType]) return { type: WEBJS_TYPES[webType], rawType: webType };
  const unfamiliar = key ?? mediaType ?? webType;
  // A raw type we do not know (a new wrapper, a new kind of message): WAHA's normalised fields
  // may still say it is a location, a contact or a file; anything else stays unknown.
  if (unfamiliar) {
    const inferred = inferType(p);
    return { type: inferred === 'text' ? 'unknown' : inferred, rawType: unfamiliar };
  }
  return { type: inferType(p) };
}

/** The type WAHA's normalised fields suggest (no engine detail: older WAHA, trimmed payloads). */
function inferType(p: Json): MessageType {
  if (isRecord(p.location)) return 'location';
  if (Array.isArray(p.vCards) && p.vCards.length > 0) return 'contact';
  const mime = loose.str(loose.rec(p, 'media'), 'mimetype');
  if (p.hasMedia === true || mime) {
    if (mime?.startsWith('image/')) return 'image';
    if (mime?.startsWith('video/')) return 'video';
    if (mime?.startsWith('audio/')) return 'audio';
    return 'document';
  }
  return typeof p.body === 'string' && p.body !== '' ? 'text' : 'unknown';
}

function readLocation(p: Json, path: string, value: unknown): LocationData | undefined {
  const loc = optRecord(p, 'location', path);
  // WEBJS sends the coordinates as strings.
  const latitude = loose.num(loc, 'latitude') ?? loose.num(value, 'degreesLatitude');
  const longitude = loose.num(loc, 'longitude') ?? loose.num(value, 'degreesLongitude');
  if (latitude === undefined || longitude === undefined) return undefined;
  // WEBJS's `description` is the name and the address on two lines: the last resort for the name.
  return compact<LocationData>({
    latitude,
    longitude,
    name: loose.str(value, 'name') ?? loose.str(loc, 'name') ?? loose.str(loc, 'description'),
    address: loose.str(value, 'address') ?? loose.str(loc, 'address'),
  });
}

function readContactCard(p: Json, path: string, key: string | undefined, value: unknown): ContactCard | undefined {
  let vcards = (optArray(p, 'vCards', path) ?? []).filter((v): v is string => typeof v === 'string' && v !== '');
  if (vcards.length === 0 && key === 'contactMessage') vcards = [loose.str(value, 'vcard')].filter((v): v is string => !!v);
  if (vcards.length === 0 && key === 'contactsArrayMessage') {
    const list = isRecord(value) && Array.isArray(value.contacts) ? value.contacts : [];
    vcards = list.map((c) => loose.str(c, 'vcard')).filter((v): v is string => !!v);
  }
  if (vcards.length === 0) return undefined;
  const fn = /^FN[^:\r\n]*:(.*)$/m.exec(vcards[0])?.[1]?.trim();
  return compact<ContactCard>({ vcards, displayName: loose.str(value, 'displayName') ?? (fn || undefined) });
}

// whatsmeow names these fields sourceID/sourceURL/…URL, Baileys sourceId/sourceUrl/…Url.
const either = (o: unknown, a: string, b: string) => loose.str(o, a) ?? loose.str(o, b);
// ExternalAdReplyInfo.MediaType: 1 IMAGE, 2 VIDEO.
const AD_MEDIA_TYPES: Record<number, string> = { 1: 'image', 2: 'video' };

/** GOWS/NOWEB: `contextInfo.externalAdReply` plus the conversion fields beside it. */
function adFromContextInfo(ci: Json | undefined): AdAttribution | undefined {
  const ear = loose.rec(ci, 'externalAdReply');
  const ad = compact<AdAttribution>({
    source_type: loose.str(ear, 'sourceType'),
    source_id: either(ear, 'sourceID', 'sourceId'),
    source_url: either(ear, 'sourceURL', 'sourceUrl'),
    source_app: loose.str(ear, 'sourceApp'),
    ctwa_clid: loose.str(ear, 'ctwaClid'),
    headline: loose.str(ear, 'title'),
    body: loose.str(ear, 'body'),
    media_type: AD_MEDIA_TYPES[loose.num(ear, 'mediaType') ?? 0],
    media_url: either(ear, 'mediaURL', 'mediaUrl'),
    thumbnail_url: either(ear, 'thumbnailURL', 'thumbnailUrl'),
    conversion_source: loose.str(ci, 'conversionSource'),
    conversion_data: loose.str(ci, 'conversionData'),
    entry_point: loose.str(ci, 'entryPointConversionSource'),
    entry_point_app: loose.str(ci, 'entryPointConversionApp'),
    entry_point_external_source: loose.str(ci, 'entryPointConversionExternalSource'),
  });
  // A link preview also uses externalAdReply; only an ad carries a source id or click id.
  return ad.source_id || ad.ctwa_clid || ad.entry_point === 'ctwa_ad' ? ad : undefined;
}

/** WEBJS: `_data.ctwaContext` (description is the ad body, as WhatsApp Web itself maps it). */
function adFromCtwaContext(c: Json | undefined): AdAttribution | undefined {
  if (!c) return undefined;
  const ad = compact<AdAttribution>({
    source_type: loose.str(c, 'sourceType'),
    source_id: loose.str(c, 'sourceId'),
    source_url: loose.str(c, 'sourceUrl'),
    source_app: loose.str(c, 'sourceApp'),
    ctwa_clid: loose.str(c, 'ctwaClid'),
    headline: loose.str(c, 'title'),
    body: loose.str(c, 'description'),
    media_type: AD_MEDIA_TYPES[loose.num(c, 'mediaType') ?? 0],
    media_url: loose.str(c, 'mediaUrl'),
    thumbnail_url: loose.str(c, 'thumbnailUrl'),
    conversion_source: loose.str(c, 'conversionSource'),
    conversion_data: loose.str(c, 'conversionData'),
  });
  return ad.source_id || ad.source_url || ad.ctwa_clid ? ad : undefined;
}
