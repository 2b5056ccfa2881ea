// Meta WhatsApp Cloud API webhook body → normalised inbound events. One POST may carry several
// entries, each with several changes, each with several messages and statuses: every one of them
// becomes an event, in the order Meta listed them (which is not delivery order: see isForward).
// A message or status that cannot be read becomes a `malformed` event of its own, so that one
// item of a shape we do not know does not cost the others in the same POST (the processor parks
// the body for it); so does a change's list (contacts, messages, statuses, errors) that is not a
// list, and a change's unreadable metadata costs that change. A body whose frame (object, entry,
// changes) cannot be read is a ParseError.
import {
  type ContactRef, type InboundEvent, type Json, type MessageStatus, ParseError, compact,
  loose, needRecord, needString, optArray, optRecord, optString,
} from '../../domain/inbound.ts';
import { lookupTable } from '../../domain/lookup.ts';
import { normalizePhone } from '../../domain/phone.ts';
import { type CloudValueContext, parseCloudMessage, readCloudError, readCloudTime } from './cloud-message.ts';

const STATUSES = lookupTable<MessageStatus>({
  sent: 'sent', delivered: 'delivered', read: 'read', played: 'played', failed: 'failed',
});

export type CloudParseOptions = {
  /**
   * The channel's business phone number id. A change addressed to another number (its
   * metadata.phone_number_id differs: a Meta app subscribed to more numbers than this channel)
   * is skipped as `other_phone_number`, so it is never stored as this channel's. A change without
   * a phone_number_id is processed.
   */
  phoneNumberId?: string;
};

/**
 * The body with what the changes addressed to other numbers carry left out, for what is kept of it
 * (parse_errors): another number's customers are another channel's, maybe another project's, and
 * never this one's to read. Each such change keeps its place, its field and the number it names
 * (so the paths of the reasons stored with the body still point at their items, and a replay skips
 * it again as another number's); its contacts, messages and statuses are gone. The body itself
 * when there is nothing to leave out, or when it is not a webhook body at all.
 */
export function withoutOtherNumbers(body: unknown, phoneNumberId: string | undefined): unknown {
  const entries = loose.list(body, 'entry');
  if (phoneNumberId === undefined || !entries) return body;
  const otherNumber = (c: unknown): string | undefined => {
    const to = loose.str(loose.rec(loose.rec(c, 'value'), 'metadata'), 'phone_number_id');
    return to !== undefined && to !== phoneNumberId ? to : undefined;
  };
  let changed = false;
  const kept = entries.map((e) => {
    const changes = loose.list(e, 'changes');
    if (!changes?.some(otherNumber)) return e;
    changed = true;
    return {
      ...(e as Json),
      changes: changes.map((c) => {
        const to = otherNumber(c);
        return to === undefined ? c : { field: (c as Json).field, value: { metadata: { phone_number_id: to } } };
      }),
    };
  });
  return changed ? { ...(body as Json), entry: kept } : body;
}

export function parseCloudWebhook(body: unknown, opts: CloudParseOptions = {}): InboundEvent[] {
  const b = needRecord(body, 'body');
  const object = needString(b, 'object', 'body');
  if (object !== 'whatsapp_business_account') {
    throw new ParseError(`body.object must be "whatsapp_business_account", got "${object}"`);
  }
  const entries = optArray(b, 'entry', 'body');
  if (!entries) throw new ParseError('body.entry is missing');

  const out: InboundEvent[] = [];
  entries.forEach((e, i) => {
    const ePath = `body.entry[${i}]`;
    const entry = needRecord(e, ePath);
    const wabaId = optString(entry, 'id', ePath);
    const changes = optArray(entry, 'changes', ePath);
    // The frame names what changed; an entry without it cannot be read (Meta always sends one).
    if (!changes) throw new ParseError(`${ePath}.changes is missing`);
    // An empty list says nothing, and is counted like an empty change.
    if (changes.length === 0) out.push({ kind: 'ignored', provider: 'whatsapp_cloud', event: 'messages', reason: 'unhandled_event', detail: 'entry without changes' });
    changes.forEach((c, j) => {
      const cPath = `${ePath}.changes[${j}]`;
      // A change that cannot be read (no field, a value that is no object) costs itself, not the
      // other changes of the POST.
      let field: string;
      let value: Record<string, unknown>;
      try {
        const change = needRecord(c, cPath);
        field = needString(change, 'field', cPath);
        value = needRecord(change.value, `${cPath}.value`);
      } catch (err) {
        if (!(err instanceof ParseError)) throw err;
        out.push({ kind: 'ignored', provider: 'whatsapp_cloud', event: 'messages', reason: 'malformed', detail: err.reason });
        return;
      }
      // Template, quality and account updates share this webhook; they are counted, not processed.
      if (field !== 'messages') {
        out.push({ kind: 'ignored', provider: 'whatsapp_cloud', event: field, reason: 'unhandled_event' });
        return;
      }
      const addressedTo = loose.str(loose.rec(value, 'metadata'), 'phone_number_id');
      if (opts.phoneNumberId !== undefined && addressedTo !== undefined && addressedTo !== opts.phoneNumberId) {
        out.push({
          kind: 'ignored', provider: 'whatsapp_cloud', event: field, reason: 'other_phone_number',
          detail: `phone_number_id ${addressedTo} is not this channel's (${opts.phoneNumberId})`,
        });
        return;
      }
      // A change whose metadata has a shape we do not know costs that change only, as an
      // unreadable message costs that message only (its other parts: see parseValue).
      try {
        out.push(...parseValue(value, `${cPath}.value`, wabaId));
      } catch (err) {
        if (!(err instanceof ParseError)) throw err;
        out.push({ kind: 'ignored', provider: 'whatsapp_cloud', event: field, reason: 'malformed', detail: err.reason });
      }
    });
  });
  return out;
}

function parseValue(value: Json, path: string, wabaId: string | undefined): InboundEvent[] {
  // The metadata says whose messages these are: one that cannot be read costs the whole change.
  const metadata = optRecord(value, 'metadata', path);
  const out: InboundEvent[] = [];
  // Every other part is read apart: one of a shape we do not know is reported (a malformed event
  // of its own) and the others are still applied. Contacts only give the senders' push names.
  const contacts = part(out, 'messages', () => optArray(value, 'contacts', path)) ?? [];
  const ctx: CloudValueContext = {
    contacts,
    phoneNumberId: metadata && optString(metadata, 'phone_number_id', `${path}.metadata`),
    displayPhoneNumber: metadata && optString(metadata, 'display_phone_number', `${path}.metadata`),
    wabaId,
  };
  const messages = part(out, 'messages', () => optArray(value, 'messages', path)) ?? [];
  messages.forEach((m, k) => out.push(item('messages', () => parseCloudMessage(m, `${path}.messages[${k}]`, ctx))));
  const statuses = part(out, 'statuses', () => optArray(value, 'statuses', path)) ?? [];
  statuses.forEach((s, k) => out.push(item('statuses', () => parseStatus(s, `${path}.statuses[${k}]`))));
  // Errors at the value level mean Meta could not deliver something to us at all.
  for (const err of part(out, 'errors', () => optArray(value, 'errors', path)) ?? []) {
    const e = readCloudError(err);
    out.push({
      kind: 'ignored', provider: 'whatsapp_cloud', event: 'errors', reason: 'provider_error',
      detail: [e.code, e.title, e.message].filter((x) => x !== undefined).join(' '),
    });
  }
  if (out.length === 0) {
    out.push({ kind: 'ignored', provider: 'whatsapp_cloud', event: 'messages', reason: 'unhandled_event', detail: 'empty change' });
  }
  return out;
}

/** One part of a change (its contacts, its lists); one that cannot be read is a `malformed` event in `out`. */
function part<T>(out: InboundEvent[], event: string, read: () => T): T | undefined {
  try {
    return read();
  } catch (err) {
    if (!(err instanceof ParseError)) throw err;
    out.push({ kind: 'ignored', provider: 'whatsapp_cloud', event, reason: 'malformed', detail: err.reason });
    return undefined;
  }
}

/** One message or status; one that cannot be read is a `malformed` event instead of the body's end. */
function item(event: string, parse: () => InboundEvent): InboundEvent {
  try {
    return parse();
  } catch (err) {
    if (!(err instanceof ParseError)) throw err;
    return { kind: 'ignored', provider: 'whatsapp_cloud', event, reason: 'malformed', detail: err.reason };
  }
}

function parseStatus(raw: unknown, path: string): InboundEvent {
  const s = needRecord(raw, path);
  const externalId = needString(s, 'id', path);
  const word = needString(s, 'status', path);
  const timestamp = readCloudTime(s, path);
  const status = STATUSES[word];
  if (!status) return { kind: 'ignored', provider: 'whatsapp_cloud', event: 'statuses', reason: 'unknown_status', detail: word };

  const recipientId = optString(s, 'recipient_id', path);
  const phone = recipientId ? normalizePhone(recipientId) : undefined;
  const recipient: ContactRef | undefined = phone ? { phone, waId: phone.slice(1) } : undefined;
  const errors = optArray(s, 'errors', path) ?? [];
  return compact({
    kind: 'status' as const,
    provider: 'whatsapp_cloud' as const,
    event: 'statuses',
    externalId,
    messageKey: externalId,
    status,
    // Statuses only ever describe messages we sent.
    fromMe: true,
    timestamp,
    error: errors.length ? readCloudError(errors[0]) : undefined,
    recipient,
  });
}
