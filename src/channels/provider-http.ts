// One JSON request to a provider's HTTP API (WAHA, the Graph API): no redirects followed, a
// deadline, the body read (up to MAX_ANSWER_BYTES) and parsed when it is JSON. Throws only when no answer came
// (refused, reset or timed out before a status, or an error status whose body then broke off); any
// status is an answer for the caller to classify, and a success stays one even when its body breaks off.
import { fetch as undiciFetch, type Dispatcher } from 'undici';
import { readBounded } from '../bounded-read.ts';
import { parseStorableJson, storableText } from '../domain/text.ts';
import { errorCodes } from '../webhooks/classify.ts';
import { BLOCKED_ADDRESS_CODE } from '../webhooks/ssrf-guard.ts';

/** The address guard refused to connect: the provider URL names a loopback or private address. */
export function isBlockedAddress(err: unknown): boolean {
  return errorCodes(err).includes(BLOCKED_ADDRESS_CODE);
}

export type ProviderAnswer = {
  status: number;
  json: unknown;
  text: string;
  retryAfter: string | null;
  /** A 2xx whose body broke off (reset, our deadline): why. `json` is then undefined. */
  bodyBroken?: string;
};

/** Fetch options this module uses; a dispatcher decides where connections may go (ssrf-guard.ts). */
export type ProviderFetchInit = { method: string; headers: Record<string, string>; body?: string; signal: AbortSignal; dispatcher?: Dispatcher | undefined };

/** `fetch` without redirects, through `init.dispatcher` when there is one. */
export async function providerFetch(url: string, init: ProviderFetchInit): Promise<Response> {
  const { dispatcher, ...rest } = init;
  if (!dispatcher) return fetch(url, { ...rest, redirect: 'manual' });
  return (await undiciFetch(url, { ...rest, redirect: 'manual', dispatcher })) as unknown as Response;
}

export async function providerRequest(
  url: string,
  opts: { method: string; headers: Record<string, string>; body?: unknown; timeoutMs: number; dispatcher?: Dispatcher | undefined },
): Promise<ProviderAnswer> {
  const res = await providerFetch(url, {
    method: opts.method,
    headers: { accept: 'application/json', ...opts.headers, ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
    signal: AbortSignal.timeout(opts.timeoutMs),
    dispatcher: opts.dispatcher,
  });
  // The answer ends up in our rows (a send's error, a status detail): stored as text it must be storable.
  // A success whose body breaks off (a reset, our deadline) stays a success: a send the provider
  // answered 2xx went out, and must not be sent again for want of the rest of its answer. An error
  // status without its body says too little (WAHA's "session not ready, try again" is in the body):
  // that is no answer, as before.
  const { kept, whole, error } = await readBounded(res.body, MAX_ANSWER_BYTES);
  const ok = res.status >= 200 && res.status < 300;
  if (error !== undefined && !ok) throw error;
  const text = storableText(kept.toString('utf8'));
  let json: unknown;
  try {
    json = text && whole ? parseStorableJson(text) : undefined;
  } catch {
    json = undefined;
  }
  const answer: ProviderAnswer = { status: res.status, json, text, retryAfter: res.headers.get('retry-after') };
  return error === undefined ? answer : { ...answer, bodyBroken: error instanceof Error ? error.message : String(error) };
}

/**
 * A provider's answers are small (an id, an error). The URL is the tenant's to set, so a server
 * that streams without end must not fill our memory: past this the answer is cut (its status
 * still counts — a send it answered 2xx is not sent again) and the connection dropped.
 */
export const MAX_ANSWER_BYTES = 1024 * 1024;
