// Who a WAHA message is with. The original system took the contact from `from` even for our own
// messages and stored LIDs as phones; these functions are the fix, shared by every WAHA event.
import { type ContactRef, type IgnoreReason, type Json, loose } from '../../domain/inbound.ts';
import { parseJid } from '../../domain/phone.ts';

export type ContactResolution =
  | { ok: true; contact: ContactRef }
  | { ok: false; reason: IgnoreReason; detail: string };

const NOT_A_CONTACT: Record<string, IgnoreReason> = {
  group: 'group',
  status: 'status',
  newsletter: 'newsletter',
  broadcast: 'broadcast',
};

/**
 * The other party of a message-like payload (message, reaction, revoke, edit).
 *
 * The chat is `_data.Info.Chat` on GOWS, otherwise `fromMe ? to : from`, falling back to the
 * engine's own chat field. When the chat is a LID, the phone is looked for where each engine puts
 * it; the sender fields only describe the other party when the message is theirs (on our own
 * messages they describe us).
 */
export function resolveWahaContact(p: Json, fromMe: boolean): ContactResolution {
  const data = loose.rec(p, '_data');
  const info = loose.rec(data, 'Info'); // GOWS
  const key = loose.rec(data, 'key'); // NOWEB
  const chat =
    loose.str(info, 'Chat') ??
    (fromMe ? loose.str(p, 'to') : loose.str(p, 'from')) ??
    loose.str(key, 'remoteJid') ??
    loose.str(loose.rec(data, 'id'), 'remote'); // WEBJS
  if (!chat) return { ok: false, reason: 'unknown_address', detail: 'no chat id in payload' };

  // A contact's message to a broadcast list of theirs is, for us, a message from them (their
  // WhatsApp delivers it to each member one to one), but NOWEB and GOWS name the list as its chat
  // and the contact as its sender. Our own broadcast-list messages stay skipped.
  if (!fromMe && parseJid(chat).kind === 'broadcast') {
    const sender = loose.str(p, 'participant') ?? loose.str(key, 'participant') ?? loose.str(info, 'Sender');
    const senderKind = sender ? parseJid(sender).kind : undefined;
    if (sender && (senderKind === 'phone' || senderKind === 'lid')) {
      return contactFrom(sender, [sender, loose.str(info, 'SenderAlt'), loose.str(key, 'participantPn'), loose.str(key, 'senderPn')]);
    }
  }

  const candidates = [chat, loose.str(key, 'remoteJidAlt')];
  if (fromMe) {
    candidates.push(loose.str(info, 'RecipientAlt'));
  } else {
    candidates.push(
      loose.str(info, 'Sender'),
      loose.str(info, 'SenderAlt'),
      loose.str(key, 'senderPn'),
      loose.str(key, 'participantPn'),
    );
  }
  return contactFrom(chat, candidates);
}

/**
 * The recipient of an ack. WAHA puts the chat in `from` and us in `to` on acks of our own messages
 * (unlike messages), so take whichever side is not us.
 */
export function resolveAckRecipient(p: Json, me: string | undefined): ContactResolution {
  const from = loose.str(p, 'from');
  const to = loose.str(p, 'to');
  const meUser = me ? userOf(me) : undefined;
  const chat = from && (!meUser || userOf(from) !== meUser) ? from : (to ?? from);
  if (!chat) return { ok: false, reason: 'unknown_address', detail: 'no chat id in ack' };
  return contactFrom(chat, [chat]);
}

/**
 * The first of these chat ids that is not a contact (a group, Status, a newsletter, a broadcast
 * list), with the reason to skip it. For payloads whose sides differ by engine: a reaction of ours
 * in a group has the group in `from` (GOWS, NOWEB) or in `to` (WEBJS), and us on the other side.
 */
export function notAContact(...chats: Array<string | undefined>): { reason: IgnoreReason; detail: string } | undefined {
  for (const chat of chats) {
    const skip = chat ? NOT_A_CONTACT[parseJid(chat).kind] : undefined;
    if (skip) return { reason: skip, detail: chat! };
  }
  return undefined;
}

/** Our own WhatsApp ids, from the webhook envelope's `me`: the phone's (`id`) and the LID. */
export type OwnIds = { id?: string; lid?: string };

/** A chat id as the phone or LID it names (nothing for a group, Status…). */
function refOf(jid: string | undefined): ContactRef {
  const j = jid ? parseJid(jid) : undefined;
  return j?.kind === 'phone' ? { phone: j.phone } : j?.kind === 'lid' ? { lid: j.lid } : {};
}

/** Whether a contact is us: our phone (any device of it) or our LID. */
const isUs = (c: ContactRef, us: ContactRef): boolean => (!!c.phone && c.phone === us.phone) || (!!c.lid && c.lid === us.lid);

/**
 * Whether a payload is in the business's own chat ("Message yourself", notes to self): the other
 * party resolved to our own number or LID; or, when it could not be resolved (`contact` not
 * given), every side the payload names (`from`, `to`; at least `minSides` of them) is us. That
 * chat is no conversation with a contact: the business must not become a contact of its own.
 */
export function inOwnChat(p: Json, me: OwnIds, contact: ContactRef | undefined, minSides: 1 | 2): boolean {
  const us: ContactRef = { ...refOf(me.lid), ...refOf(me.id) };
  if (!us.phone && !us.lid) return false;
  if (contact) return isUs(contact, us);
  const sides = [loose.str(p, 'from'), loose.str(p, 'to')].filter((s): s is string => s !== undefined);
  return sides.length >= minSides && sides.every((s) => isUs(refOf(s), us));
}

function contactFrom(chat: string, candidates: Array<string | undefined>): ContactResolution {
  const chatKind = parseJid(chat);
  const skip = NOT_A_CONTACT[chatKind.kind];
  if (skip) return { ok: false, reason: skip, detail: chat };

  const contact: ContactRef = {};
  for (const c of candidates) {
    if (!c) continue;
    const j = parseJid(c);
    if (j.kind === 'phone' && !contact.phone) {
      contact.phone = j.phone;
      contact.waId = j.waId;
    } else if (j.kind === 'lid' && !contact.lid) {
      contact.lid = j.lid;
    }
  }
  if (!contact.phone && !contact.lid) return { ok: false, reason: 'unknown_address', detail: chat };
  return { ok: true, contact };
}

const userOf = (jid: string): string => jid.split('@')[0].split(':')[0];

/**
 * The bare message id. WEBJS/NOWEB serialise ids as `false_<chat>_<ID>[_<participant>]`, GOWS may
 * send the bare `<ID>`, and revoke/edit events name their target bare: all of them meet on `<ID>`.
 */
export function wahaMessageKey(id: string): string {
  const m = /^(?:true|false)_[^_]+_([^_]+)(?:_.+)?$/s.exec(id); // `s`: `.` takes newlines too, as in PostgreSQL
  return m ? m[1] : id;
}
