// Fetching a message's file from the host that keeps it (Meta's media host, a WAHA server) and
// passing it on as a stream (GET /messages/{id}/media). Both need a credential the API's client
// must not see, so the bytes come through us: no redirects are followed (the credential goes to
// the host named and nowhere else), the host has a deadline for its answer and for each next
// piece, and a client that stops reading lets the connection go.
import { Readable } from 'node:stream';
import type { Dispatcher } from 'undici';
import type { AppError } from '../errors.ts';
import { isBlockedAddress, providerFetch } from './provider-http.ts';

/**
 * How long the media host may keep us waiting: for its answer's headers, and then for each next
 * piece of the body. Not the whole transfer: a big file to a slow client may take longer, and the
 * time the client takes to read is not the host's.
 */
export const MEDIA_DOWNLOAD_TIMEOUT_MS = 120_000;

/** What is known of a file: its type, its name, and its length when the bytes will be exactly that long. */
export type MediaFile = { mimetype: string; filename: string | null; size: number | null };

/** `head`: what a HEAD is told, no bytes fetched. */
export type MessageMedia =
  | { kind: 'url'; url: string; mimetype: string | null; filename: string | null }
  | ({ kind: 'stream'; body: Readable } & MediaFile)
  | ({ kind: 'head' } & MediaFile);

/** `timeoutMs`: MEDIA_DOWNLOAD_TIMEOUT_MS unless given (tests). `download: false`: look up only (a HEAD). */
export type MediaOptions = { timeoutMs?: number; download?: boolean };

export type MediaRequest = {
  url: string;
  /** The host's credential and anything else it needs; `accept-encoding: identity` is added. */
  headers: Record<string, string>;
  dispatcher?: Dispatcher | undefined;
  /** The type and name we know; a type we know wins over the host's Content-Type. */
  known: { mimetype: string | null; filename: string | null };
  /** The length to announce when the host gives none (Meta's lookup has one). */
  sizeHint?: unknown;
  /** The error for a host's answer other than 200: the host's words are the caller's to read. */
  refused(status: number): AppError;
  /** The error when no answer came: `blocked` when the address guard refused to connect. */
  unreachable(err: unknown, blocked: boolean): AppError;
};

/** A Content-Length, a file_size: a length, or null when it is not one. */
export function sizeOf(v: unknown): number | null {
  const n = typeof v === 'string' && v.trim() ? Number(v) : v;
  return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : null;
}

/** GET the file and pass it on as a stream; with `opts.download === false`, a HEAD and what it says. */
export async function fetchMedia(r: MediaRequest, opts: MediaOptions = {}): Promise<Exclude<MessageMedia, { kind: 'url' }>> {
  const timeoutMs = opts.timeoutMs ?? MEDIA_DOWNLOAD_TIMEOUT_MS;
  const head = opts.download === false;
  // One controller for the whole download: the deadlines below abort through it, and so does a
  // stream that is dropped (its connection goes with it).
  const abort = new AbortController();
  const headersLate = setTimeout(() => abort.abort(new Error(`the media host did not answer within ${timeoutMs} ms`)), timeoutMs);
  let res: Response;
  try {
    // `identity`: fetch would otherwise ask for gzip/br and decompress, and the length we pass on
    // would be wrong.
    res = await providerFetch(r.url, {
      method: head ? 'HEAD' : 'GET',
      headers: { ...r.headers, 'accept-encoding': 'identity' },
      signal: abort.signal,
      dispatcher: r.dispatcher,
    });
  } catch (err) {
    throw r.unreachable(err, isBlockedAddress(err));
  } finally {
    clearTimeout(headersLate);
  }
  if (res.status !== 200 || (!head && !res.body)) {
    await res.body?.cancel();
    throw r.refused(res.status);
  }
  const mimetype = r.known.mimetype || res.headers.get('content-type') || 'application/octet-stream';
  // A host may compress though asked not to; fetch then hands us the decompressed bytes, and its
  // Content-Length (the compressed size) is not theirs: send without a length.
  const encoded = (res.headers.get('content-encoding') ?? '').split(',').some((c) => !['', 'identity'].includes(c.trim().toLowerCase()));
  const size = encoded ? null : (sizeOf(res.headers.get('content-length')) ?? sizeOf(r.sizeHint));
  if (head) {
    await res.body?.cancel();
    return { kind: 'head', mimetype, filename: r.known.filename, size };
  }
  return { kind: 'stream', body: untilStalled(res.body as ReadableStream<Uint8Array>, abort, timeoutMs), mimetype, filename: r.known.filename, size };
}

/**
 * The body as a Node stream that fails when the media host sends nothing for `stallMs` while we
 * wait for it. Only a pending read is timed: while our caller is slow to take what we have (a slow
 * client, backpressure) nothing is asked of the host and no deadline runs.
 */
function untilStalled(body: ReadableStream<Uint8Array>, abort: AbortController, stallMs: number): Readable {
  const reader = body.getReader();
  let ended = false;
  // Our own client may stop reading too (and keep the connection to the host, and its buffers,
  // open for ever): once we have handed a piece on, no further read asked of us for as long ends
  // the stream. (While we wait for the host, that is the host's deadline, above.)
  let idle: NodeJS.Timeout | undefined;
  const watchClient = (stream: Readable) => {
    idle = setTimeout(() => stream.destroy(new Error(`the client read nothing for ${stallMs} ms`)), stallMs);
    idle.unref();
  };
  return new Readable({
    read() {
      clearTimeout(idle);
      const stalled = setTimeout(() => abort.abort(new Error(`the media host sent nothing for ${stallMs} ms`)), stallMs);
      void (async () => {
        try {
          for (;;) {
            const { done, value } = await reader.read();
            // An abort may end the body as if it were complete: it is not.
            if (abort.signal.aborted) throw abort.signal.reason;
            if (done) {
              ended = true;
              this.push(null);
              return watchClient(this); // what is buffered must still be read
            }
            if (value.byteLength > 0) {
              this.push(value);
              return watchClient(this);
            }
          }
        } catch (err) {
          this.destroy(abort.signal.aborted && abort.signal.reason instanceof Error ? abort.signal.reason : (err as Error));
        } finally {
          clearTimeout(stalled);
        }
      })();
    },
    destroy(err, callback) {
      clearTimeout(idle);
      // Failed, or dropped before the end (the client went away): let go of the connection to the host.
      if (!ended) abort.abort(err ?? new Error('the media stream was closed before its end'));
      reader.cancel().then(() => callback(err), () => callback(err));
    },
  });
}
