// The port an outbound message goes through to reach WhatsApp: one implementation per provider
// (WAHA, the Cloud API). A sender only talks to its provider and says what
// happened; storing the outcome, retrying and emitting events is the sender consumer's job.
import type { Dispatcher } from 'undici';
import { lookupTable } from '../domain/lookup.ts';
import { parseUrl } from '../url.ts';

/** What we send. `text` is the body of a text message or the caption of a media message. */
export type OutboundContent = {
  type: OutboundType;
  text: string | null;
  media: { url: string; mimetype: string | null; filename: string | null } | null;
  /** The provider id of the message this one replies to. */
  replyToExternalId: string | null;
  /** A template message's template (the Cloud API's only way to write outside the 24-hour window). */
  template?: OutboundTemplate | null;
};

/** A message template approved in the business's WhatsApp Manager; `components` go to Meta as given. */
export type OutboundTemplate = { name: string; language: string; components?: unknown[] };

export const OUTBOUND_TYPES = ['text', 'image', 'document', 'audio', 'video', 'template'] as const;
export type OutboundType = (typeof OUTBOUND_TYPES)[number];
export type OutboundMediaType = Exclude<OutboundType, 'text' | 'template'>;

/** Who we send to: the contact's phone (E.164) or, when WhatsApp only gave us one, its LID. */
export type Recipient = { phone: string | null; waLid: string | null };

/** A channel as a sender needs it: its provider settings and credentials in clear. */
export type SendingChannel = { id: string; type: 'waha' | 'whatsapp_cloud'; config: Record<string, unknown>; secrets: Record<string, string | undefined> };

export type SendOutcome =
  | {
      ok: true;
      /** The provider's id of the new message, exactly as it returned it (null if it returned none). */
      externalId: string | null;
    }
  | {
      ok: false;
      /** Worth trying again later (timeout, refused, 5xx, 429); false means it will never go (4xx). */
      retry: boolean;
      error: string;
      /** The provider's status or error code, for message.failed. */
      code: string | null;
      /** The provider's short title and details, when it gave them (Meta's error_user_title, error_data.details). */
      title?: string | null;
      details?: string | null;
      /** The provider asked us to wait this long (Retry-After). */
      retryAfterMs?: number;
    };

export interface ProviderSender {
  /** `dispatcher`: where connections may go (providerDispatchers); any address when absent. */
  send(channel: SendingChannel, to: Recipient, content: OutboundContent, dispatcher?: Dispatcher): Promise<SendOutcome>;
}

/**
 * The one place an HTTP answer or a network failure becomes an outcome class: 2xx is handled by
 * the caller; 408, 425, 429 and 5xx (but 501 and 505) are worth retrying; any other status is
 * final; no answer at all (refused, reset, timed out) is retried.
 */
export function classifyFailure(status: number | null, detail: string, retryAfter?: string | null): Extract<SendOutcome, { ok: false }> {
  if (status === null) return { ok: false, retry: true, error: detail, code: null };
  // 501 and 505: the server does not do this at all (a feature its edition lacks); trying again
  // cannot help, and would hold the conversation's later replies through every retry.
  const retry = status === 408 || status === 425 || status === 429 || (status >= 500 && status !== 501 && status !== 505);
  const after = retryAfter ? retryAfterMs(retryAfter) : undefined;
  return { ok: false, retry, error: detail, code: String(status), ...(after !== undefined ? { retryAfterMs: after } : {}) };
}

function retryAfterMs(v: string): number | undefined {
  if (/^\d+$/.test(v.trim())) return Number(v.trim()) * 1000;
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, at - Date.now());
}

const EXTENSION_TYPES = lookupTable<string>({
  jpg: 'image/jpeg', jpeg: 'image/jpeg', png: 'image/png', webp: 'image/webp', gif: 'image/gif',
  mp4: 'video/mp4', '3gp': 'video/3gpp', mov: 'video/quicktime',
  ogg: 'audio/ogg; codecs=opus', opus: 'audio/ogg; codecs=opus', mp3: 'audio/mpeg', m4a: 'audio/mp4', aac: 'audio/aac', amr: 'audio/amr',
  pdf: 'application/pdf', txt: 'text/plain', csv: 'text/csv', doc: 'application/msword', xls: 'application/vnd.ms-excel',
  docx: 'application/vnd.openxmlformats-officedocument.wordprocessingml.document',
  xlsx: 'application/vnd.openxmlformats-officedocument.spreadsheetml.sheet',
  zip: 'application/zip',
});
const TYPE_DEFAULTS: Record<OutboundMediaType | 'text', string> = {
  text: 'text/plain',
  image: 'image/jpeg',
  video: 'video/mp4',
  audio: 'audio/ogg; codecs=opus',
  document: 'application/octet-stream',
};

/** The media's type: given, else guessed from the file name or URL, else the type's usual one. */
export function mimetypeOf(type: OutboundMediaType | 'text', media: { url: string; mimetype: string | null; filename: string | null }): string {
  if (media.mimetype) return media.mimetype;
  for (const name of [media.filename, safePath(media.url)]) {
    const ext = name?.split('.').pop()?.toLowerCase();
    if (ext && EXTENSION_TYPES[ext]) return EXTENSION_TYPES[ext];
  }
  return TYPE_DEFAULTS[type];
}

/** A file name for the media: given, else the last segment of the URL's path. */
export function filenameOf(media: { url: string; filename: string | null }): string | null {
  if (media.filename) return media.filename;
  const last = safePath(media.url)?.split('/').pop();
  if (!last) return null;
  try {
    return decodeURIComponent(last);
  } catch {
    return last;
  }
}

function safePath(url: string): string | undefined {
  return parseUrl(url)?.pathname;
}

/**
 * A provider's words with the channel's own secrets taken out: an answer may repeat what it was
 * sent (Meta's "Malformed access token EAA…"), and the reason is stored on the message and sent to
 * subscribers in `message.failed`, where a channel's secrets are never shown.
 */
export function withoutSecrets(text: string, secrets: Record<string, string | undefined>): string {
  let out = text;
  for (const value of Object.values(secrets)) {
    // Short values are not secrets worth the name, and would cut up ordinary words.
    if (typeof value === 'string' && value.length >= 8) out = out.split(value).join('[redacted]');
  }
  return out;
}
