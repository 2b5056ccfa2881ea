// The provider seam. Each WhatsApp provider says how its webhooks are authenticated (checked by
// the ingress on the raw bytes, before anything is parsed) and how a body becomes normalised
// InboundEvents (run by the processor). Everything else — queueing, spilling, the transaction —
// is provider-agnostic. A new provider is one entry here plus its parser.
import { createHash, createHmac, timingSafeEqual } from 'node:crypto';
import type { ChannelType } from '../db/channels.sql.ts';
import { loose, type InboundEvent, type Provider } from '../domain/inbound.ts';
import { parseWahaEvent } from './waha/waha.parser.ts';
import { parseCloudWebhook, withoutOtherNumbers } from './whatsapp-cloud/cloud.parser.ts';
import type { KnownChannel } from './channel-directory.ts';

export type IngressRequest = {
  rawBody: Buffer;
  headers: Record<string, string | string[] | undefined>;
  query: Record<string, unknown>;
};

export type Verdict = { ok: true } | { ok: false; reason: string };

export interface InboundProvider {
  readonly name: Provider;
  /** The channel type whose webhooks this provider sends. */
  readonly channelType: ChannelType;
  /** Authenticates one webhook. Pure and synchronous: it runs on the ingress fast path. */
  verify(channel: KnownChannel, req: IngressRequest): Verdict;
  /**
   * Body (already JSON-decoded) → events, for the channel it was posted to. Throws ParseError on
   * malformed input.
   */
  parse(body: unknown, channel: Pick<KnownChannel, 'config'>): InboundEvent[];
  /**
   * What of a (JSON-decoded) body may be kept for the channel it was posted to, when it is parked
   * or dead-lettered: the body without parts that belong to someone else. Absent: the body as it
   * came.
   */
  keptBody?(body: unknown, channel: Pick<KnownChannel, 'config'>): unknown;
}

/**
 * The bytes of a webhook that may be kept (parked, dead-lettered): those received when `keep`
 * leaves the decoded body as it was, else the JSON of what it keeps.
 */
export function keptBytes(raw: Buffer, body: unknown, keep: ((body: unknown) => unknown) | undefined): Buffer {
  const kept = keep ? keep(body) : body;
  return kept === body ? raw : Buffer.from(JSON.stringify(kept));
}

const OK: Verdict = { ok: true };
const fail = (reason: string): Verdict => ({ ok: false, reason });

export function header(req: IngressRequest, name: string): string | undefined {
  const v = req.headers[name];
  return Array.isArray(v) ? v[0] : v;
}

const sha256 = (s: string): Buffer => createHash('sha256').update(s).digest();

/**
 * A secret someone chose (any length), compared in constant time through equal-length digests:
 * neither its content nor its length leaks.
 */
export function sameSecret(given: string, expected: string): boolean {
  return timingSafeEqual(sha256(given), sha256(expected));
}

/**
 * A webhook token, compared in constant time without hashing (it runs for every webhook). Every
 * token is 24 random bytes in base64url, so refusing another length at once reveals nothing.
 */
export function sameToken(given: string, token: Buffer): boolean {
  const bytes = Buffer.from(given);
  return bytes.length === token.length && timingSafeEqual(bytes, token);
}

/**
 * A hex signature compared in constant time with the HMAC of the raw body. Exactly the digest's
 * hex, nothing more: Node's hex decoding drops a trailing odd digit, which must not pass.
 */
export function hmacMatches(algorithm: 'sha256' | 'sha512', key: string, body: Buffer, givenHex: string): boolean {
  const expected = createHmac(algorithm, key).update(body).digest();
  const wellFormed = givenHex.length === expected.length * 2 && /^[0-9a-f]+$/i.test(givenHex);
  const given = wellFormed ? Buffer.from(givenHex, 'hex') : Buffer.alloc(0);
  return given.length === expected.length && timingSafeEqual(given, expected);
}

export const wahaProvider: InboundProvider = {
  name: 'waha',
  channelType: 'waha',
  verify(channel, req) {
    const q = req.query.token;
    const token = (typeof q === 'string' ? q : undefined) ?? header(req, 'x-webhook-token');
    if (!token || !sameToken(token, channel.token)) return fail('webhook token missing or wrong');
    const key = channel.secrets.hmac_key;
    if (key) {
      const algorithm = header(req, 'x-webhook-hmac-algorithm');
      if (algorithm && algorithm.toLowerCase() !== 'sha512') return fail(`unsupported HMAC algorithm ${algorithm}`);
      const signature = header(req, 'x-webhook-hmac');
      if (!signature || !hmacMatches('sha512', key, req.rawBody, signature)) return fail('X-Webhook-Hmac missing or wrong');
    }
    return OK;
  },
  parse: parseWahaEvent,
};

export const cloudProvider: InboundProvider = {
  name: 'whatsapp_cloud',
  channelType: 'whatsapp_cloud',
  verify(channel, req) {
    const secret = channel.secrets.app_secret;
    const signature = header(req, 'x-hub-signature-256');
    if (!secret) return fail('channel has no app secret');
    if (!signature?.startsWith('sha256=') || !hmacMatches('sha256', secret, req.rawBody, signature.slice(7))) {
      return fail('X-Hub-Signature-256 missing or wrong');
    }
    return OK;
  },
  // One Meta app can be subscribed for several numbers: only changes for this channel's number count.
  parse: (body, channel) => parseCloudWebhook(body, { phoneNumberId: loose.str(channel.config, 'phone_number_id') }),
  // Another number's changes are skipped, never stored, never parked (providers.md): the body
  // parked for something of this number's must not carry theirs either.
  keptBody: (body, channel) => withoutOtherNumbers(body, loose.str(channel.config, 'phone_number_id')),
};

export const PROVIDERS: Record<Provider, InboundProvider> = {
  waha: wahaProvider,
  whatsapp_cloud: cloudProvider,
};

export function providerOf(name: string): InboundProvider | undefined {
  return Object.hasOwn(PROVIDERS, name) ? PROVIDERS[name as Provider] : undefined;
}

/**
 * Meta's subscription handshake (GET with hub.mode, hub.verify_token, hub.challenge): the
 * challenge to echo when the token is the channel's, else undefined.
 */
export function cloudSubscriptionChallenge(channel: KnownChannel, query: Record<string, unknown>): string | undefined {
  const mode = query['hub.mode'];
  const token = query['hub.verify_token'];
  const challenge = query['hub.challenge'];
  const expected = channel.secrets.verify_token;
  if (mode !== 'subscribe' || typeof token !== 'string' || typeof challenge !== 'string' || !expected) return undefined;
  return sameSecret(token, expected) ? challenge : undefined;
}
