// Calls we make to a WAHA server (providers.md §1 "Sending"): send a message, read a session's
// state. Every call carries the channel's API key in X-Api-Key, has a deadline, and does not follow
// redirects (a WAHA URL that redirects is misconfigured, and credentials must not follow it).
import { classifyFailure, filenameOf, mimetypeOf, type OutboundContent, type ProviderSender, type Recipient, type SendingChannel, type SendOutcome } from './sender.ts';
import type { Dispatcher } from 'undici';
import { isBlockedAddress, providerRequest, type ProviderAnswer } from './provider-http.ts';

/** `dispatcher`: where connections may go (WAHA_ALLOW_PRIVATE_URLS, providerDispatchers); any address when absent. */
export type WahaConnection = { baseUrl: string; session: string; apiKey: string; timeoutMs?: number; dispatcher?: Dispatcher | undefined };

export const DEFAULT_WAHA_TIMEOUT_MS = 15_000;

export type WahaAnswer = ProviderAnswer;

/** The connection settings of a WAHA channel (config + opened secrets). */
export function wahaConnectionOf(channel: Pick<SendingChannel, 'config' | 'secrets'>, timeoutMs?: number, dispatcher?: Dispatcher): WahaConnection {
  return {
    baseUrl: String(channel.config.base_url ?? '').replace(/\/+$/, ''),
    session: String(channel.config.session ?? 'default'),
    apiKey: channel.secrets.api_key ?? '',
    ...(timeoutMs !== undefined ? { timeoutMs } : {}),
    dispatcher,
  };
}

/** Why a WAHA call was refused before it left: the guard found base_url on a private address. */
export function wahaBlockedText(conn: Pick<WahaConnection, 'baseUrl'>): string {
  return `WAHA's base_url ${conn.baseUrl} is a loopback or private address, which this deployment does not let channels reach (WAHA_ALLOW_PRIVATE_URLS=false)`;
}

/** One request to WAHA. Throws only when no answer came (refused, reset or timed out before a status; an error status whose body broke off). */
export function wahaRequest(conn: WahaConnection, method: 'GET' | 'POST' | 'PUT', path: string, body?: unknown): Promise<WahaAnswer> {
  return providerRequest(`${conn.baseUrl}${path}`, {
    method,
    headers: { 'x-api-key': conn.apiKey },
    body,
    timeoutMs: conn.timeoutMs ?? DEFAULT_WAHA_TIMEOUT_MS,
    dispatcher: conn.dispatcher,
  });
}

/** The WhatsApp chat id of a recipient: `<digits>@c.us` for a phone, the LID itself otherwise. */
export function wahaChatId(to: Recipient): string | undefined {
  if (to.phone) return `${to.phone.replace(/^\+/, '')}@c.us`;
  return to.waLid ?? undefined;
}

/** The WAHA endpoint and body for one message. */
export function wahaSendRequest(session: string, chatId: string, c: OutboundContent): { path: string; body: Record<string, unknown> } {
  const reply = c.replyToExternalId ? { reply_to: c.replyToExternalId } : {};
  if (c.type === 'template') throw new Error('WAHA sends no template messages');
  if (c.type === 'text' || !c.media) return { path: '/api/sendText', body: { session, chatId, text: c.text ?? '', ...reply } };
  const file = { mimetype: mimetypeOf(c.type, c.media), filename: filenameOf(c.media), url: c.media.url };
  const caption = c.text ? { caption: c.text } : {};
  switch (c.type) {
    case 'image':
      return { path: '/api/sendImage', body: { session, chatId, file, ...caption, ...reply } };
    case 'video':
      return { path: '/api/sendVideo', body: { session, chatId, file, ...caption, ...reply } };
    case 'audio':
      // A voice note: WhatsApp shows no caption on audio.
      return { path: '/api/sendVoice', body: { session, chatId, file, ...reply } };
    case 'document':
      return { path: '/api/sendFile', body: { session, chatId, file, ...caption, ...reply } };
  }
}

/**
 * The new message's id in WAHA's answer, which differs by engine: `id` as a string (GOWS), `id`
 * as an object with `_serialized` (WEBJS), or `key.id` (NOWEB). The serialized form is preferred:
 * it is what the message.any echo carries, and both forms reduce to the same bare key anyway.
 */
export function wahaMessageIdOf(json: unknown): string | undefined {
  if (!json || typeof json !== 'object') return undefined;
  const o = json as Record<string, any>;
  if (typeof o.id === 'string' && o.id) return o.id;
  if (o.id && typeof o.id === 'object') {
    if (typeof o.id._serialized === 'string' && o.id._serialized) return o.id._serialized;
    if (typeof o.id.id === 'string' && o.id.id) return o.id.id;
  }
  if (o.key && typeof o.key === 'object' && typeof o.key.id === 'string' && o.key.id) return o.key.id;
  // Some versions wrap the sent message: {message: {...}} or {_data: {...}}.
  return wahaMessageIdOf(o.message) ?? (o._data && o._data !== o ? wahaMessageIdOf(o._data) : undefined);
}

/** WAHA's words for why it refused: its JSON `message`/`error`, else the start of the body. */
export function wahaErrorText(a: WahaAnswer): string {
  const j = a.json as Record<string, unknown> | undefined;
  const m = j && (j.message ?? j.error ?? j.exception);
  const text = typeof m === 'string' ? m : m !== undefined ? JSON.stringify(m) : a.text;
  return `WAHA answered ${a.status}${text ? `: ${text.slice(0, 500)}` : ''}`;
}

export const wahaSender: ProviderSender = {
  async send(channel, to, content, dispatcher): Promise<SendOutcome> {
    const conn = wahaConnectionOf(channel, undefined, dispatcher);
    const chatId = wahaChatId(to);
    if (!chatId) return { ok: false, retry: false, error: 'the contact has no WhatsApp address (no phone, no LID)', code: 'no_address' };
    if (!conn.baseUrl) return { ok: false, retry: false, error: 'the channel has no base_url', code: 'misconfigured' };
    // POST /messages refuses them for WAHA channels; one queued otherwise never goes as something else.
    if (content.type === 'template') return { ok: false, retry: false, error: 'WAHA sends no template messages (they are a Cloud API feature)', code: 'unsupported' };
    const { path, body } = wahaSendRequest(conn.session, chatId, content);
    let answer: WahaAnswer;
    try {
      answer = await wahaRequest(conn, 'POST', path, body);
    } catch (err) {
      if (isBlockedAddress(err)) return { ok: false, retry: false, error: wahaBlockedText(conn), code: 'blocked_address' };
      return classifyFailure(null, `WAHA could not be reached: ${(err as Error).message}`);
    }
    if (answer.status >= 200 && answer.status < 300) return { ok: true, externalId: wahaMessageIdOf(answer.json) ?? null };
    const failure = classifyFailure(answer.status, wahaErrorText(answer), answer.retryAfter);
    // While its session (re)starts WAHA answers 422 "Session status is not as expected. Try again
    // later…" with the status it is in, and 404 "We didn't find a session with name '…'. Please
    // start it first" while it is stopped (a restarted WAHA that has not restored it yet, a phone
    // being paired again): answers to try again, not refusals of the message.
    const waitForSession = (answer.status === 422 && sessionNotReady(answer.json)) || (answer.status === 404 && sessionNotFound(answer.json));
    return waitForSession ? { ...failure, retry: true } : failure;
  },
};

/** WAHA's 422 for a session not WORKING: `{error|message, session, status, expected: ["WORKING"]}`. */
function sessionNotReady(json: unknown): boolean {
  const o = json as Record<string, unknown> | undefined;
  return Array.isArray(o?.expected) && o.expected.includes('WORKING') && typeof o.status === 'string' && o.status !== 'WORKING';
}

/** WAHA's 404 for a session it does not have running: `{statusCode: 404, message: "We didn't find a session with name '…'…"}`. */
function sessionNotFound(json: unknown): boolean {
  const message = (json as Record<string, unknown> | undefined)?.message;
  return typeof message === 'string' && /didn't find a session/i.test(message);
}

/** `GET /api/sessions/{session}` → WAHA's status word (WORKING, SCAN_QR_CODE, FAILED…). */
export async function wahaSessionStatus(conn: WahaConnection): Promise<{ ok: true; status: string } | { ok: false; error: string }> {
  let a: WahaAnswer;
  try {
    a = await wahaRequest(conn, 'GET', `/api/sessions/${encodeURIComponent(conn.session)}`);
  } catch (err) {
    return { ok: false, error: isBlockedAddress(err) ? wahaBlockedText(conn) : `WAHA at ${conn.baseUrl} could not be reached: ${(err as Error).message}` };
  }
  if (a.bodyBroken) return { ok: false, error: `WAHA at ${conn.baseUrl} broke off its answer: ${a.bodyBroken}` };
  const status = (a.json as Record<string, unknown> | undefined)?.status;
  if (a.status === 200 && typeof status === 'string') return { ok: true, status };
  return { ok: false, error: a.status === 200 ? 'WAHA answered without a session status' : wahaErrorText(a) };
}
