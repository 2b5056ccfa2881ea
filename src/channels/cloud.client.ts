// Calls we make to Meta's Graph API for a WhatsApp Cloud API channel (providers.md §2 "Sending"):
// send a message, look a media id up. Every call carries the channel's access token as a bearer
// token, has a deadline, and does not follow redirects (the token must never follow one).
import { classifyFailure, filenameOf, type OutboundContent, type ProviderSender, type Recipient, type SendingChannel, type SendOutcome } from './sender.ts';
import type { Dispatcher } from 'undici';
import { isBlockedAddress, providerRequest, type ProviderAnswer } from './provider-http.ts';

export const DEFAULT_GRAPH_BASE_URL = 'https://graph.facebook.com';
export const DEFAULT_GRAPH_VERSION = 'v21.0';
export const DEFAULT_GRAPH_TIMEOUT_MS = 15_000;

/** `dispatcher`: where the connections may go (ssrf-guard.ts); any address when absent. */
export type CloudConnection = { baseUrl: string; version: string; phoneNumberId: string; accessToken: string; timeoutMs?: number; dispatcher?: Dispatcher | undefined };

export type GraphAnswer = ProviderAnswer;

/** Meta's error object, as far as we use it: `{error: {message, type, code, error_data: {details}, error_user_title?, error_user_msg?}}`. */
export type GraphError = { code: number | null; subcode: number | null; title: string | null; message: string | null; details: string | null };

/**
 * Meta's answer to a free-form message outside the customer service window (24 h after the
 * customer's last message): "Re-engagement message". Only a template may be sent then.
 */
export const REENGAGEMENT_CODE = 131047;
export const WINDOW_CLOSED_REASON =
  "WhatsApp only allows free-form replies within 24 hours of the customer's last message; this conversation's window has closed: send a template message (POST /messages with type template)";

// Throttling answers, whatever HTTP status Meta wraps them in (often 400): 4 app calls, 80007 WABA
// rate limit, 130429 throughput, 131056 too many messages to one recipient. All pass with time.
const THROTTLED = new Set([4, 80007, 130429, 131056]);
// Meta's own transient faults: 1 unknown API error, 2 service unavailable, 131000 something went
// wrong, 133004 server temporarily unavailable.
const TRANSIENT = new Set([1, 2, 131000, 133004]);

/** The connection settings of a Cloud channel (config + opened secrets). */
export function cloudConnectionOf(channel: Pick<SendingChannel, 'config' | 'secrets'>, timeoutMs?: number): CloudConnection {
  const version = String(channel.config.api_version ?? '').trim() || DEFAULT_GRAPH_VERSION;
  return {
    baseUrl: (String(channel.config.api_base_url ?? '').trim() || DEFAULT_GRAPH_BASE_URL).replace(/\/+$/, ''),
    // Accept "21.0" as well as "v21.0": both are seen in copied settings.
    version: version.startsWith('v') ? version : `v${version}`,
    phoneNumberId: String(channel.config.phone_number_id ?? ''),
    accessToken: channel.secrets.access_token ?? '',
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
  };
}

/** One Graph API request. Throws only when no answer came (refused, reset or timed out before a status; an error status whose body broke off). */
export function graphRequest(conn: CloudConnection, method: 'GET' | 'POST', path: string, body?: unknown): Promise<GraphAnswer> {
  return providerRequest(`${conn.baseUrl}/${conn.version}${path}`, {
    method,
    headers: { authorization: `Bearer ${conn.accessToken}` },
    body,
    timeoutMs: conn.timeoutMs ?? DEFAULT_GRAPH_TIMEOUT_MS,
    dispatcher: conn.dispatcher,
  });
}

/** The Cloud API body for one message to `to` (digits only, no '+'). */
export function cloudMessageBody(to: string, c: OutboundContent): Record<string, unknown> {
  const base: Record<string, unknown> = { messaging_product: 'whatsapp', recipient_type: 'individual', to };
  if (c.type === 'template') {
    if (!c.template) throw new Error('a template message without its template');
    const { name, language, components } = c.template;
    return { ...base, type: 'template', template: { name, language: { code: language }, ...(components && components.length > 0 ? { components } : {}) } };
  }
  if (c.replyToExternalId) base.context = { message_id: c.replyToExternalId };
  if (c.type === 'text' || !c.media) {
    const body = c.text ?? '';
    // Meta renders a link preview only when asked; ask when there is a link to preview.
    return { ...base, type: 'text', text: { body, ...(/https?:\/\//i.test(body) ? { preview_url: true } : {}) } };
  }
  const media: Record<string, unknown> = { link: c.media.url };
  // Meta rejects a caption on audio, and a file name anywhere but on a document.
  if (c.text && c.type !== 'audio') media.caption = c.text;
  if (c.type === 'document') {
    const filename = filenameOf(c.media);
    if (filename) media.filename = filename;
  }
  return { ...base, type: c.type, [c.type]: media };
}

/** Meta's error object out of an answer, or all-null when the answer has none. */
export function graphErrorOf(json: unknown): GraphError {
  const e = json && typeof json === 'object' ? (json as Record<string, any>).error : undefined;
  const o = e && typeof e === 'object' ? (e as Record<string, any>) : {};
  const num = (v: unknown) => (typeof v === 'number' ? v : typeof v === 'string' && /^\d+$/.test(v) ? Number(v) : null);
  const str = (v: unknown) => (typeof v === 'string' && v ? v : null);
  return {
    code: num(o.code),
    subcode: num(o.error_subcode),
    // Not `type` (OAuthException…): a class name, not words for a person.
    title: str(o.error_user_title) ?? str(o.title),
    message: str(o.error_user_msg) ?? str(o.message),
    details: str(o.error_data?.details),
  };
}

/** The outcome of a non-2xx Graph answer: Meta's error code decides before the HTTP status does. */
export function classifyGraphFailure(a: GraphAnswer): Extract<SendOutcome, { ok: false }> {
  const err = graphErrorOf(a.json);
  const words = [err.message, err.details].filter(Boolean).join(' — ') || a.text.slice(0, 300);
  const detail = `Meta answered ${a.status}${err.code !== null ? ` (code ${err.code})` : ''}${words ? `: ${words}` : ''}`;
  if (err.code === REENGAGEMENT_CODE) return { ok: false, retry: false, error: WINDOW_CLOSED_REASON, code: String(REENGAGEMENT_CODE), title: err.title, details: err.details };
  const base = { ...classifyFailure(a.status, detail, a.retryAfter), title: err.title, details: err.details };
  const code = err.code !== null ? String(err.code) : base.code;
  if (err.code !== null && (THROTTLED.has(err.code) || TRANSIENT.has(err.code))) return { ...base, retry: true, code };
  return { ...base, code };
}

/** The Cloud API takes digits only; it has no way to address a LID. */
export function cloudRecipient(to: Recipient): string | undefined {
  const digits = to.phone?.replace(/\D/g, '');
  return digits || undefined;
}

export const cloudSender: ProviderSender = {
  async send(channel, to, content, dispatcher): Promise<SendOutcome> {
    const conn = { ...cloudConnectionOf(channel), dispatcher };
    const recipient = cloudRecipient(to);
    if (!recipient) return { ok: false, retry: false, error: 'the contact has no phone number (the Cloud API cannot address a LID)', code: 'no_address' };
    if (!conn.phoneNumberId || !conn.accessToken) return { ok: false, retry: false, error: 'the channel has no phone_number_id or access_token', code: 'misconfigured' };
    // Never sent as something else: POST /messages stores the template with the message.
    if (content.type === 'template' && !content.template) return { ok: false, retry: false, error: 'the template message has no template stored with it', code: 'unsupported' };
    let answer: GraphAnswer;
    try {
      answer = await graphRequest(conn, 'POST', `/${encodeURIComponent(conn.phoneNumberId)}/messages`, cloudMessageBody(recipient, content));
    } catch (err) {
      if (isBlockedAddress(err)) {
        return { ok: false, retry: false, error: `the channel's Graph API address ${conn.baseUrl} is a loopback or private address (CLOUD_API_ALLOW_PRIVATE_URLS=true allows it)`, code: 'blocked_address' };
      }
      return classifyFailure(null, `the Graph API could not be reached: ${(err as Error).message}`);
    }
    if (answer.status >= 200 && answer.status < 300) {
      const id = (answer.json as { messages?: Array<{ id?: unknown }> } | undefined)?.messages?.[0]?.id;
      return { ok: true, externalId: typeof id === 'string' && id ? id : null };
    }
    return classifyGraphFailure(answer);
  },
};
