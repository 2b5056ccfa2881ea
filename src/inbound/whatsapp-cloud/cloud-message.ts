// One Cloud API `messages[]` item → a normalised message (or reaction). Meta documents these shapes,
// so they are validated strictly: a wrong type here is a malformed delivery, not engine drift.
import {
  type AdAttribution, type ContactCard, type ContactRef, type InboundEvent, type InboundMessage,
  type Json, type MediaRef, type MessageType, ParseError, compact, loose, needRecord, needString,
  fromUnixTime, isStorableTime, optArray, optBoolean, optNumber, optRecord, optString,
} from '../../domain/inbound.ts';
import { lookupTable } from '../../domain/lookup.ts';
import { normalizePhone } from '../../domain/phone.ts';
import { parseStorableJson, providedName } from '../../domain/text.ts';

/** What the surrounding `value` tells about every message in it. */
export type CloudValueContext = {
  contacts: unknown[];
  phoneNumberId?: string;
  displayPhoneNumber?: string;
  wabaId?: string;
};

const MEDIA = lookupTable<MessageType>({
  image: 'image', video: 'video', audio: 'audio', document: 'document', sticker: 'sticker',
});

export function parseCloudMessage(raw: unknown, path: string, ctx: CloudValueContext): InboundEvent {
  const m = needRecord(raw, path);
  const externalId = needString(m, 'id', path);
  const from = needString(m, 'from', path);
  const rawType = needString(m, 'type', path);
  const timestamp = readCloudTime(m, path);

  const phone = normalizePhone(from);
  if (!phone) return { kind: 'ignored', provider: 'whatsapp_cloud', event: 'messages', reason: 'unknown_address', detail: from };
  const contact: ContactRef = { phone, waId: phone.slice(1) };
  const profile = findProfile(ctx.contacts, from);

  if (rawType === 'reaction') {
    const r = needRecord(m.reaction, `${path}.reaction`);
    const target = needString(r, 'message_id', `${path}.reaction`);
    return {
      kind: 'reaction', provider: 'whatsapp_cloud', event: 'messages', externalId,
      targetExternalId: target, targetKey: target,
      // Meta omits `emoji` when the customer removes their reaction.
      emoji: optString(r, 'emoji', `${path}.reaction`) ?? '',
      fromMe: false, contact, timestamp,
    };
  }

  const context = optRecord(m, 'context', path);
  const replyTo = context ? optString(context, 'id', `${path}.context`) : undefined;
  const content = readContent(m, rawType, path);
  const message: InboundMessage = {
    kind: 'message',
    provider: 'whatsapp_cloud',
    event: 'messages',
    externalId,
    // Cloud ids (wamid.…) have one form everywhere, so the key is the id.
    messageKey: externalId,
    fromMe: false,
    contact,
    pushName: profile,
    type: content.type,
    text: content.text,
    media: content.media,
    location: content.location,
    contactCard: content.contactCard,
    replyToExternalId: replyTo,
    replyToKey: replyTo,
    timestamp,
    ad: readReferral(optRecord(m, 'referral', path)),
    metadata: compact({
      event: 'messages',
      raw_type: rawType,
      phone_number_id: ctx.phoneNumberId,
      display_phone_number: ctx.displayPhoneNumber,
      waba_id: ctx.wabaId,
      forwarded: context ? optBoolean(context, 'forwarded', `${path}.context`) : undefined,
      // Read leniently: extras Meta adds to a message, kept when they are there.
      frequently_forwarded: loose.bool(context, 'frequently_forwarded'),
      // A question about a product of the business's catalogue ("Message business" on a product).
      referred_product: productOf(loose.rec(context, 'referred_product')),
      // The customer's security code changed (identity change check): Meta's hash and time.
      identity: identityOf(loose.rec(m, 'identity')),
      ...content.metadata,
    }),
  };
  return compact(message);
}

type Content = Pick<InboundMessage, 'type' | 'text' | 'media' | 'location' | 'contactCard'> & {
  metadata?: Record<string, unknown>;
};

function readContent(m: Json, rawType: string, path: string): Content {
  const p = `${path}.${rawType}`;
  if (rawType === 'text') {
    return { type: 'text', text: needString(needRecord(m.text, p), 'body', p) };
  }
  if (MEDIA[rawType]) {
    const o = needRecord(m[rawType], p);
    const voice = rawType === 'audio' && optBoolean(o, 'voice', p) === true;
    const animated = loose.bool(o, 'animated');
    return {
      type: voice ? 'voice' : MEDIA[rawType],
      text: optString(o, 'caption', p) || undefined,
      media: compact<MediaRef>({
        mediaId: needString(o, 'id', p),
        mimetype: optString(o, 'mime_type', p),
        sha256: optString(o, 'sha256', p),
        filename: optString(o, 'filename', p),
      }),
      ...(rawType === 'sticker' && animated !== undefined ? { metadata: { animated } } : {}),
    };
  }
  if (rawType === 'location') {
    const o = needRecord(m.location, p);
    const latitude = optNumber(o, 'latitude', p);
    const longitude = optNumber(o, 'longitude', p);
    if (latitude === undefined || longitude === undefined) throw new ParseError(`${p} needs latitude and longitude`);
    const url = loose.str(o, 'url');
    return {
      type: 'location',
      location: compact({ latitude, longitude, name: optString(o, 'name', p), address: optString(o, 'address', p) }),
      ...(url ? { metadata: { location_url: url } } : {}),
    };
  }
  if (rawType === 'contacts') {
    const list = optArray(m, 'contacts', path) ?? [];
    return { type: 'contact', contactCard: contactCard(list, `${path}.contacts`) };
  }
  if (rawType === 'interactive') {
    const o = needRecord(m.interactive, p);
    const kind = optString(o, 'type', p);
    const reply = kind ? optRecord(o, kind, p) : undefined;
    if (kind === 'nfm_reply' && reply) {
      // A WhatsApp Flow's answers: a JSON document in a string, and the words the customer saw.
      const q = `${p}.nfm_reply`;
      return {
        type: 'interactive',
        text: optString(reply, 'body', q),
        metadata: compact({ interactive_type: kind, flow_name: optString(reply, 'name', q), flow_response: flowResponse(optString(reply, 'response_json', q)) }),
      };
    }
    return {
      type: 'interactive',
      text: reply ? optString(reply, 'title', `${p}.${kind}`) : undefined,
      metadata: compact({
        interactive_type: kind,
        reply_id: reply ? optString(reply, 'id', `${p}.${kind}`) : undefined,
        reply_description: reply ? optString(reply, 'description', `${p}.${kind}`) : undefined,
      }),
    };
  }
  if (rawType === 'button') {
    const o = needRecord(m.button, p);
    return { type: 'button', text: optString(o, 'text', p), metadata: compact({ button_payload: optString(o, 'payload', p) }) };
  }
  const order = rawType === 'order' ? optRecord(m, 'order', path) : undefined;
  if (order) {
    // A cart sent from the business's catalogue: what was ordered, kept as Meta gave it.
    const o = order;
    return {
      type: 'unknown',
      text: optString(o, 'text', p),
      metadata: { order: compact({ catalog_id: optString(o, 'catalog_id', p), product_items: optArray(o, 'product_items', p) }) },
    };
  }
  const system = rawType === 'system' ? optRecord(m, 'system', path) : undefined;
  if (system) {
    // WhatsApp's own notice, such as a customer changing numbers (new_wa_id).
    const o = system;
    return {
      type: 'unknown',
      text: optString(o, 'body', p),
      metadata: { system: compact({ type: optString(o, 'type', p), new_wa_id: optString(o, 'new_wa_id', p) ?? optString(o, 'wa_id', p) }) },
    };
  }
  // unsupported / unknown / …: keep the message, say what it was and why (Meta may name the kind it
  // does not deliver: `unsupported: {type: "edit"}`, a customer's edit).
  const errors = (optArray(m, 'errors', path) ?? []).map(readCloudError);
  const unsupported = loose.str(loose.rec(m, 'unsupported'), 'type');
  const metadata = compact({ errors: errors.length ? errors : undefined, unsupported_type: unsupported });
  return { type: 'unknown', metadata: Object.keys(metadata).length ? metadata : undefined };
}

/** `context.referred_product`: which product of which catalogue the customer asked about. */
function productOf(r: Json | undefined): Record<string, unknown> | undefined {
  const product = compact({ catalog_id: loose.str(r, 'catalog_id'), product_retailer_id: loose.str(r, 'product_retailer_id') });
  return Object.keys(product).length ? product : undefined;
}

/** A message's `identity` object (Meta sends it when identity change checks are on). */
function identityOf(r: Json | undefined): Record<string, unknown> | undefined {
  const identity = compact({ acknowledged: loose.bool(r, 'acknowledged'), created_timestamp: loose.num(r, 'created_timestamp'), hash: loose.str(r, 'hash') });
  return Object.keys(identity).length ? identity : undefined;
}

/** A Flow's response_json: the document when it is one, else the text as it came. */
function flowResponse(raw: string | undefined): unknown {
  if (raw === undefined) return undefined;
  try {
    const doc = parseStorableJson(raw);
    return doc !== null && typeof doc === 'object' ? doc : raw;
  } catch {
    return raw;
  }
}

/** A Cloud error object ({code, title, message, error_data.details}), read leniently. */
export function readCloudError(e: unknown) {
  const code = loose.num(e, 'code');
  return compact({
    code: code ?? loose.str(e, 'code'),
    title: loose.str(e, 'title'),
    message: loose.str(e, 'message'),
    details: loose.str(loose.rec(e, 'error_data'), 'details'),
  });
}

function findProfile(contacts: unknown[], waId: string): string | undefined {
  // A lone entry without a wa_id is taken as the sender's; one naming someone else never is.
  const match = contacts.find((c) => loose.str(c, 'wa_id') === waId) ?? (contacts.length === 1 && loose.str(contacts[0], 'wa_id') === undefined ? contacts[0] : undefined);
  // A blank name is none (as if absent); one longer than the API takes is cut.
  return providedName(loose.str(loose.rec(match, 'profile'), 'name'));
}

// Meta's referral is already snake_case; only the media link differs (image_url or video_url).
function readReferral(r: Json | undefined): AdAttribution | undefined {
  if (!r) return undefined;
  const ad = compact<AdAttribution>({
    source_type: loose.str(r, 'source_type'),
    source_id: loose.str(r, 'source_id'),
    source_url: loose.str(r, 'source_url'),
    ctwa_clid: loose.str(r, 'ctwa_clid'),
    headline: loose.str(r, 'headline'),
    body: loose.str(r, 'body'),
    media_type: loose.str(r, 'media_type'),
    media_url: loose.str(r, 'image_url') ?? loose.str(r, 'video_url'),
    thumbnail_url: loose.str(r, 'thumbnail_url'),
  });
  // An empty or partial referral names no ad: not an ad click (as for WAHA's ad context).
  return ad.source_id || ad.source_url || ad.ctwa_clid ? ad : undefined;
}

/**
 * Cloud contact objects → vCard 3.0 text, so a shared contact looks the same whichever provider
 * carried it (WAHA hands us WhatsApp's own vCards).
 */
function contactCard(list: unknown[], path: string): ContactCard {
  const vcards = list.map((c, i) => {
    const o = needRecord(c, `${path}[${i}]`);
    const name = loose.rec(o, 'name');
    const part = (k: string) => esc(loose.str(name, k));
    const fn = loose.str(name, 'formatted_name') ??
      [loose.str(name, 'first_name'), loose.str(name, 'last_name')].filter(Boolean).join(' ');
    const lines = ['BEGIN:VCARD', 'VERSION:3.0'];
    if (name) lines.push(`N:${part('last_name')};${part('first_name')};${part('middle_name')};${part('prefix')};${part('suffix')}`);
    if (fn) lines.push(`FN:${esc(fn)}`);
    const org = loose.rec(o, 'org');
    const company = loose.str(org, 'company');
    const department = loose.str(org, 'department');
    if (company || department) lines.push(`ORG:${esc(company)}${department ? `;${esc(department)}` : ''}`);
    const title = loose.str(org, 'title');
    if (title) lines.push(`TITLE:${esc(title)}`);
    const birthday = loose.str(o, 'birthday');
    if (birthday) lines.push(`BDAY:${esc(birthday)}`);
    const typed = (x: unknown) => {
      const type = loose.str(x, 'type');
      return type ? `;type=${esc(type)}` : '';
    };
    for (const ph of listOf(o.phones)) {
      const num = loose.str(ph, 'phone');
      const waId = loose.str(ph, 'wa_id');
      if (!num && !waId) continue;
      lines.push(`TEL${typed(ph)}${waId ? `;waid=${waId.replace(/\D/g, '')}` : ''}:${esc(num ?? `+${waId}`)}`);
    }
    for (const em of listOf(o.emails)) {
      const email = loose.str(em, 'email');
      if (email) lines.push(`EMAIL${typed(em)}:${esc(email)}`);
    }
    for (const ad of listOf(o.addresses)) {
      const fields = ['street', 'city', 'state', 'zip', 'country'].map((k) => esc(loose.str(ad, k)));
      if (fields.some(Boolean)) lines.push(`ADR${typed(ad)}:;;${fields.join(';')}`);
    }
    for (const u of listOf(o.urls)) {
      const url = loose.str(u, 'url');
      if (url) lines.push(`URL${typed(u)}:${esc(url)}`);
    }
    lines.push('END:VCARD');
    return lines.join('\n');
  });
  const first = loose.rec(list[0], 'name');
  return compact<ContactCard>({ vcards, displayName: loose.str(first, 'formatted_name') });
}

const listOf = (v: unknown): unknown[] => (Array.isArray(v) ? v : []);

const esc = (s: string | undefined): string => (s ?? '').replace(/[\\;,]/g, (c) => `\\${c}`).replace(/\r?\n/g, '\\n');

/** Cloud timestamps are unix seconds as a string (milliseconds read as such, as for WAHA). */
export function readCloudTime(o: Json, path: string): Date {
  const v = o.timestamp;
  const n = typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : v;
  const d = typeof n === 'number' && Number.isInteger(n) && n > 0 ? fromUnixTime(n) : undefined;
  if (!d || !isStorableTime(d)) {
    throw new ParseError(`${path}.timestamp must be unix seconds, got ${JSON.stringify(v) ?? 'nothing'}`);
  }
  return d;
}
