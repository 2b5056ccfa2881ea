// WhatsApp addresses (JIDs) → phones. A JID is `<user>[:<device>]@<server>`; only the phone servers
// carry a phone number in `user`. A `@lid` is a privacy id that looks like digits but is NOT a phone,
// which is exactly the mistake this module exists to prevent.

export type JidKind = 'phone' | 'lid' | 'group' | 'status' | 'newsletter' | 'broadcast' | 'unknown';

export type ParsedJid =
  | { kind: 'phone'; waId: string; phone: string }
  | { kind: 'lid'; lid: string }
  | { kind: Exclude<JidKind, 'phone' | 'lid'>; jid: string };

const PHONE_SERVERS = new Set(['c.us', 's.whatsapp.net']);
// E.164: up to 15 digits, no leading zero. WhatsApp ids are at least country code + a few digits.
const E164_DIGITS = /^[1-9]\d{6,14}$/;

/**
 * Classifies a JID. Device (`:12`) and agent (`.0`) suffixes are dropped, because they name one of
 * the person's linked devices, not a different person.
 */
export function parseJid(jid: string): ParsedJid {
  const at = jid.lastIndexOf('@');
  if (at <= 0) return { kind: 'unknown', jid };
  const user = jid.slice(0, at).split(':')[0];
  const server = jid.slice(at + 1).toLowerCase();

  if (server === 'broadcast') return { kind: user === 'status' ? 'status' : 'broadcast', jid };
  if (server === 'g.us') return { kind: 'group', jid };
  if (server === 'newsletter') return { kind: 'newsletter', jid };
  if (server === 'lid') {
    const id = user.split('.')[0];
    return /^\d+$/.test(id) ? { kind: 'lid', lid: `${id}@lid` } : { kind: 'unknown', jid };
  }
  if (PHONE_SERVERS.has(server)) {
    const digits = user.split('.')[0];
    if (E164_DIGITS.test(digits)) return { kind: 'phone', waId: digits, phone: `+${digits}` };
  }
  return { kind: 'unknown', jid };
}

/** E.164 ('+5511…') for a phone JID; undefined for anything else, LIDs included. */
export function phoneFromJid(jid: string): string | undefined {
  const p = parseJid(jid);
  return p.kind === 'phone' ? p.phone : undefined;
}

/**
 * Normalises what a person or a provider calls a phone — '+55 (11) 90000-0001', '5511900000001',
 * '5511900000001@c.us', '+44 (0)20 7946 0958' — to E.164. Returns undefined when it is not a
 * plausible phone (a LID, a group, too few digits).
 */
export function normalizePhone(input: string): string | undefined {
  const s = withoutTrunkPrefix(input.trim());
  if (s.includes('@')) return phoneFromJid(s);
  if (!/^\+?[\d\s().-]+$/.test(s)) return undefined;
  const digits = s.replace(/\D/g, '');
  return E164_DIGITS.test(digits) ? `+${digits}` : undefined;
}

/**
 * A `(0)` after the country code is the national trunk prefix, written for callers inside the
 * country and never dialled from abroad ('+44 (0)20…' is +44 20…): kept, it names another number.
 */
export function withoutTrunkPrefix(s: string): string {
  return s.replace(/^(\+\d{1,3})[\s.-]*\(0\)/, '$1');
}

/** The WhatsApp id (digits only) of an E.164 phone. */
export function waIdFromPhone(phone: string): string {
  return phone.replace(/\D/g, '');
}
