// The one place that decides what an attempt's outcome means. The dispatcher records the attempt,
// then lets the class pick: done, retry (at the schedule or at Retry-After), or disable.
import { parseRetryAfter } from './retry-schedule.ts';
import { BLOCKED_ADDRESS_CODE } from './ssrf-guard.ts';
import { TIMEOUT_CODE } from './post-webhook.ts';

export const AttemptClass = {
  success: 'success',
  gone: 'gone',
  rate_limited: 'rate_limited',
  unavailable: 'unavailable',
  client_error: 'client_error',
  server_error: 'server_error',
  redirect: 'redirect',
  timeout: 'timeout',
  connection: 'connection',
  dns: 'dns',
  blocked_address: 'blocked_address',
  internal: 'internal',
} as const;
export type AttemptClass = (typeof AttemptClass)[keyof typeof AttemptClass];

export type AttemptInput = {
  statusCode?: number;
  error?: unknown;
  retryAfter?: string | readonly string[];
  /** Clock for an HTTP-date Retry-After. */
  now?: number;
};

export type AttemptOutcome = {
  class: AttemptClass;
  retry: boolean;
  /** The subscription should be disabled (the receiver said the endpoint is gone for good). */
  disable: boolean;
  /** Only for 429/503 with a Retry-After we understood. */
  retryAfterMs?: number;
  /** One line for the attempt log and `last_error`. */
  detail: string;
};

const TIMEOUT_CODES = new Set([
  TIMEOUT_CODE,
  'UND_ERR_CONNECT_TIMEOUT',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
  'ETIMEDOUT',
  'ESOCKETTIMEDOUT',
]);
const DNS_CODES = new Set(['ENOTFOUND', 'EAI_AGAIN', 'EAI_FAIL', 'EAI_NODATA', 'EAI_NONAME', 'ENODATA']);
// Everything between "we have an address" and "we have a response": refused, reset, unreachable,
// TLS handshake and certificate failures, a peer that does not speak HTTP.
const CONNECTION_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ECONNABORTED',
  'EPIPE',
  'EHOSTUNREACH',
  'EHOSTDOWN',
  'ENETUNREACH',
  'ENETDOWN',
  'EADDRNOTAVAIL',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_RES_CONTENT_LENGTH_MISMATCH',
  'UND_ERR_HEADERS_OVERFLOW',
]);
const TLS_CODE_RE = /^(ERR_TLS_|ERR_SSL_|CERT_|UNABLE_TO_|DEPTH_ZERO_|SELF_SIGNED_|HOSTNAME_MISMATCH)/;

/**
 * Classifies one attempt. Precedence: a status code wins over an error — once the receiver has
 * answered with a status it has decided, and a later failure reading its response body (say, a
 * stalled 200) does not undo that.
 *
 * Retry policy, and why:
 * - 2xx: success. 410: gone — stop and disable the subscription (contract §4).
 * - 429 / 503: retried, honouring Retry-After (clamped by the schedule module).
 * - 3xx: a failure (redirects are not followed — following one would sidestep the SSRF guard and
 *   the receiver should give us its final URL), retried in case the move is temporary.
 * - Other 4xx are retried too: in practice they come from receivers being deployed or fixed
 *   (404 before the route exists, 401 while the secret is being rolled out), and the schedule is
 *   bounded, so at worst a few wasted requests. A subscription failing for days is disabled by
 *   the dispatcher, not here.
 * - Timeouts, connection and DNS failures: retried, the endpoint may come back.
 * - blocked_address (the SSRF guard refused): retried as well. The refusal happens before any
 *   packet leaves, so a retry costs nothing, and the usual cause is DNS that changed after the URL
 *   was accepted — it may change back, or the operator may allow private URLs. A URL that is
 *   private for good was already refused when it was saved.
 * - internal (anything unrecognised — our bug, e.g. an invalid custom header): retried, so a fix
 *   deployed within the schedule still delivers; the schedule bounds the cost.
 */
export function classifyAttempt(input: AttemptInput): AttemptOutcome {
  const { statusCode, error } = input;
  if (statusCode !== undefined) return classifyStatus(statusCode, input);
  if (error !== undefined && error !== null) return classifyError(error);
  return { class: 'internal', retry: true, disable: false, detail: 'attempt ended with neither a status nor an error' };
}

function classifyStatus(status: number, input: AttemptInput): AttemptOutcome {
  const http = `HTTP ${status}`;
  if (status >= 200 && status < 300) return { class: 'success', retry: false, disable: false, detail: http };
  if (status === 410) return { class: 'gone', retry: false, disable: true, detail: `${http}: endpoint gone, subscription disabled` };
  if (status === 429 || status === 503) {
    const retryAfterMs = parseRetryAfter(input.retryAfter, input.now);
    return {
      class: status === 429 ? 'rate_limited' : 'unavailable',
      retry: true,
      disable: false,
      ...(retryAfterMs !== undefined && { retryAfterMs }),
      detail: retryAfterMs !== undefined ? `${http} (Retry-After ${Math.ceil(retryAfterMs / 1000)}s)` : http,
    };
  }
  if (status >= 300 && status < 400) return { class: 'redirect', retry: true, disable: false, detail: `${http}: redirects are not followed` };
  if (status >= 400 && status < 500) return { class: 'client_error', retry: true, disable: false, detail: http };
  // 5xx, and anything outside the defined ranges (a 1xx leaking through, a 999): the receiver's fault.
  return { class: 'server_error', retry: true, disable: false, detail: http };
}

function classifyError(error: unknown): AttemptOutcome {
  const codes = errorCodes(error);
  const detail = describe(error);
  const has = (set: Set<string>) => codes.some((c) => set.has(c));
  if (codes.includes(BLOCKED_ADDRESS_CODE)) return { class: 'blocked_address', retry: true, disable: false, detail };
  if (has(TIMEOUT_CODES) || codes.includes('TimeoutError')) return { class: 'timeout', retry: true, disable: false, detail };
  if (has(DNS_CODES)) return { class: 'dns', retry: true, disable: false, detail };
  if (has(CONNECTION_CODES) || codes.some((c) => TLS_CODE_RE.test(c) || c.startsWith('HPE_'))) {
    return { class: 'connection', retry: true, disable: false, detail };
  }
  return { class: 'internal', retry: true, disable: false, detail };
}

/**
 * Codes (and, for DOMException-style errors, names) along the cause chain and inside
 * AggregateErrors — Node reports a failed IPv4/IPv6 race as an AggregateError of per-address
 * errors, and fetch-style wrappers hide the real error in `cause`.
 */
export function errorCodes(error: unknown, depth = 0): string[] {
  if (depth > 5 || typeof error !== 'object' || error === null) return [];
  const e = error as { code?: unknown; name?: unknown; cause?: unknown; errors?: unknown };
  const out: string[] = [];
  if (typeof e.code === 'string') out.push(e.code);
  if (e.name === 'TimeoutError') out.push('TimeoutError');
  if (e.cause !== undefined) out.push(...errorCodes(e.cause, depth + 1));
  if (Array.isArray(e.errors)) for (const inner of e.errors) out.push(...errorCodes(inner, depth + 1));
  return out;
}

function describe(error: unknown): string {
  if (error instanceof Error) {
    const code = (error as { code?: unknown }).code;
    // Node's AggregateError from a failed address race has an empty message; the parts say it.
    const parts = error instanceof AggregateError ? error.errors.map((e) => describe(e)).join('; ') : '';
    const message = error.message || parts || error.name;
    const text = typeof code === 'string' && !message.includes(code) ? `${message} (${code})` : message;
    return text.slice(0, 500);
  }
  return String(error).slice(0, 500);
}
