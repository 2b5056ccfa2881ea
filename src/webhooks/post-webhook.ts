// One delivery attempt: one POST, bounded in time and in how much of the answer we read. It
// reports what happened and never throws; deciding what it means is classify.ts's job.
import { performance } from 'node:perf_hooks';
import { request, type Dispatcher } from 'undici';
import { readBounded } from '../bounded-read.ts';
import { storableText } from '../domain/text.ts';

export const TIMEOUT_CODE = 'ERR_WEBHOOK_TIMEOUT';
export const DEFAULT_MAX_RESPONSE_BYTES = 65_536;
export const RESPONSE_EXCERPT_BYTES = 1_024;

/** The per-attempt deadline passed: no complete answer within `timeoutMs`, headers and body included. */
export class WebhookTimeoutError extends Error {
  readonly code = TIMEOUT_CODE;
  constructor(readonly timeoutMs: number) {
    super(`no complete response within ${timeoutMs} ms`);
    this.name = 'WebhookTimeoutError';
  }
}

export type PostWebhookInput = {
  url: string;
  /** The exact signed bytes; sent as they are. */
  body: string;
  headers: Readonly<Record<string, string>>;
  timeoutMs: number;
  /** Normally the guarded dispatcher (ssrf-guard.ts); undici's global one otherwise. */
  dispatcher?: Dispatcher;
  maxResponseBytes?: number;
};

export type PostWebhookResult = {
  /** Present whenever the receiver answered with a status line, even if reading the body failed. */
  statusCode?: number;
  durationMs: number;
  /** The first ~1 KiB of the response body as text, for the attempt log. */
  responseExcerpt: string;
  /** Response body bytes read (never more than `maxResponseBytes`). */
  responseBytes: number;
  /** We stopped reading at `maxResponseBytes` and dropped the connection. */
  truncated: boolean;
  retryAfter?: string;
  error?: Error;
};

/**
 * POSTs `body` to `url` once. Redirects are not followed (the dispatcher does not compose
 * undici's redirect interceptor). One deadline covers connecting, the headers and the body: a
 * receiver trickling bytes cannot hold a worker past `timeoutMs`. At most `maxResponseBytes`
 * (64 KiB) of the answer are read — enough to let a normal response finish so the connection can
 * be reused — and then the stream is destroyed; only the first 1 KiB is kept.
 */
export async function postWebhook(input: PostWebhookInput): Promise<PostWebhookResult> {
  const { url, body, timeoutMs, dispatcher, maxResponseBytes = DEFAULT_MAX_RESPONSE_BYTES } = input;
  const started = performance.now();
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(new WebhookTimeoutError(timeoutMs)), timeoutMs);
  const result: Omit<PostWebhookResult, 'durationMs'> = { responseExcerpt: '', responseBytes: 0, truncated: false };
  // undici acts on an abort only once the connection is up: a receiver that accepts TCP but never
  // finishes the TLS handshake (or drops the SYN) would hold the attempt until the connector gives
  // up, far past the deadline. So the deadline is raced here too; the abandoned request settles
  // (rejects) whenever its connect ends, and is ignored.
  const deadline = new Promise<never>((_, reject) => controller.signal.addEventListener('abort', () => reject(controller.signal.reason), { once: true }));
  deadline.catch(() => undefined); // it also fires while the body is read, when nothing awaits it
  try {
    const pending = request(url, {
      method: 'POST',
      body,
      headers: withContentType(input.headers),
      signal: controller.signal,
      // The per-phase timers still apply inside the deadline; keep them from firing first with
      // undici's own (less specific) error.
      headersTimeout: timeoutMs + 1_000,
      bodyTimeout: timeoutMs + 1_000,
      ...(dispatcher && { dispatcher }),
    });
    pending.catch(() => undefined);
    const res = await Promise.race([pending, deadline]);
    result.statusCode = res.statusCode;
    const retryAfter = res.headers['retry-after'];
    const first = Array.isArray(retryAfter) ? retryAfter[0] : retryAfter;
    if (first !== undefined) result.retryAfter = first;
    await readLimited(res.body, maxResponseBytes, result);
  } catch (err) {
    result.error = toError(err);
  } finally {
    clearTimeout(timer);
  }
  return { ...result, durationMs: Math.round(performance.now() - started) };
}

/** Reads at most `max` bytes of the answer into `into`, keeping the first 1 KiB; throws what reading threw. */
async function readLimited(
  stream: Dispatcher.ResponseData['body'],
  max: number,
  into: Pick<PostWebhookResult, 'responseExcerpt' | 'responseBytes' | 'truncated'>,
): Promise<void> {
  const read = await readBounded(stream, max, RESPONSE_EXCERPT_BYTES);
  if (!stream.destroyed) stream.destroy();
  into.responseBytes = read.total;
  into.truncated = !read.whole && read.error === undefined;
  // `stream: true` holds back a multi-byte character cut at the 1 KiB edge instead of
  // emitting a replacement character.
  // Stored as text: a NUL byte in the answer (binary, padded) would make PostgreSQL refuse the
  // attempt's record, and the delivery, though answered, be sent again and again.
  into.responseExcerpt = storableText(new TextDecoder('utf-8').decode(read.kept, { stream: true }));
  if (read.error !== undefined) throw read.error;
}

function withContentType(headers: Readonly<Record<string, string>>): Record<string, string> {
  const hasType = Object.keys(headers).some((k) => k.toLowerCase() === 'content-type');
  return hasType ? { ...headers } : { ...headers, 'content-type': 'application/json' };
}

function toError(err: unknown): Error {
  return err instanceof Error ? err : new Error(String(err));
}
