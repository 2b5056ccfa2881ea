// The file behind a message's media (GET /messages/{id}/media). The Cloud API delivers media as
// ids: the Graph API turns an id into a short-lived URL (about 5 minutes), and that URL itself only
// answers with the channel's access token. Handing the URL to a client would mean handing out the
// token, so for a Cloud message we look the id up and stream the bytes through. WAHA messages
// already carry a URL their client can fetch; for those the caller is pointed at it.
import { Readable } from 'node:stream';
import type { Database } from '../db/database.ts';
import { findChannel } from '../db/channels.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { AppError, notFound } from '../errors.ts';
import { openChannelSecrets } from '../services/channels.service.ts';
import type { Dispatcher } from 'undici';
import { cloudConnectionOf, graphErrorOf, graphRequest, type CloudConnection } from './cloud.client.ts';
import { providerFetch } from './provider-http.ts';
import { errorCodes } from '../webhooks/classify.ts';
import { BLOCKED_ADDRESS_CODE } from '../webhooks/ssrf-guard.ts';

/**
 * How long the media host may keep us waiting: for its answer's headers, and then for each next
 * piece of the body. Not the whole transfer: a big file to a slow client may take longer, and the
 * time the client takes to read is not the host's.
 */
export const MEDIA_DOWNLOAD_TIMEOUT_MS = 120_000;

/** What is known of a file: its type, its name, and its length when the bytes will be exactly that long. */
type MediaFile = { mimetype: string; filename: string | null; size: number | null };

/** `head`: what a HEAD is told — the file as Meta's lookup describes it, no bytes fetched. */
export type MessageMedia =
  | { kind: 'url'; url: string; mimetype: string | null; filename: string | null }
  | ({ kind: 'stream'; body: Readable } & MediaFile)
  | ({ kind: 'head' } & MediaFile);

/** `timeoutMs`: MEDIA_DOWNLOAD_TIMEOUT_MS unless given (tests). `download: false`: look up only (a HEAD). */
export type MediaOptions = { timeoutMs?: number; download?: boolean };

/**
 * `dispatcher`: where the lookup and the download may connect. The media URL comes from the Graph
 * API's answer, and the Graph API's address from the channel's settings: without a guard, whoever
 * may edit a channel could have us fetch an internal address and hand them its bytes.
 */
export type MediaDeps = { db: Database; secretKey: string; dispatcher?: Dispatcher | undefined };

/** The media of one of the project's messages: a URL to follow, or the bytes (with `download: false`, what they are). 404 when there is none. */
export async function messageMedia(deps: MediaDeps, projectId: string, messageId: string, opts: MediaOptions = {}): Promise<MessageMedia> {
  const found = await withTransaction(
    deps.db,
    async (tx) => {
      const r = await tx.query<{ channel_id: string; media: Record<string, unknown> | null }>(
        'SELECT channel_id, media FROM messages WHERE project_id = $1 AND id = $2',
        [projectId, messageId],
      );
      const row = r.rows[0];
      if (!row) throw notFound('message');
      const channel = await findChannel(tx, projectId, row.channel_id);
      return { media: row.media, channel };
    },
    { projectId },
  );
  const media = found.media;
  const str = (v: unknown) => (typeof v === 'string' && v ? v : null);
  const mimetype = str(media?.mimetype) ?? str(media?.mime_type);
  const filename = str(media?.filename);
  const mediaId = str(media?.media_id);
  if (mediaId && found.channel?.type === 'whatsapp_cloud') {
    const conn = { ...cloudConnectionOf({ config: found.channel.config, secrets: openChannelSecrets(deps.secretKey, found.channel.secrets) }), dispatcher: deps.dispatcher };
    return downloadCloudMedia(conn, mediaId, { mimetype, filename }, opts);
  }
  const url = str(media?.url);
  if (url) return { kind: 'url', url, mimetype, filename };
  if (mediaId) throw new AppError('not_found', 'the channel this media came through no longer exists');
  throw new AppError('not_found', 'this message has no media');
}

/**
 * GET /{version}/{media_id} → `{url, mime_type, file_size}`, then GET that URL with the token
 * (unless `opts.download` is false: then the lookup's description only).
 */
export async function downloadCloudMedia(conn: CloudConnection, mediaId: string, known: { mimetype: string | null; filename: string | null }, opts: MediaOptions = {}): Promise<MessageMedia> {
  let lookup;
  try {
    lookup = await graphRequest(conn, 'GET', `/${encodeURIComponent(mediaId)}`);
  } catch (err) {
    if (blockedAddress(err)) throw privateAddress('the Graph API address of this channel');
    throw new AppError('unavailable', `the Graph API could not be reached: ${(err as Error).message}`);
  }
  if (lookup.bodyBroken) throw new AppError('unavailable', `the Graph API broke off its answer: ${lookup.bodyBroken}`);
  if (lookup.status !== 200) throw graphFailure(lookup.status, lookup.json, 'looking the media up');
  const info = (lookup.json ?? {}) as { url?: unknown; mime_type?: unknown; file_size?: unknown };
  if (typeof info.url !== 'string' || !/^https?:\/\//.test(info.url)) throw new AppError('unavailable', 'the Graph API answered without a media URL');
  const typeOf = (res?: Response) => (typeof info.mime_type === 'string' && info.mime_type) || known.mimetype || res?.headers.get('content-type') || 'application/octet-stream';
  const sizeOf = (v: unknown) => {
    const n = typeof v === 'string' && v.trim() ? Number(v) : v;
    return typeof n === 'number' && Number.isSafeInteger(n) && n >= 0 ? n : null;
  };
  if (opts.download === false) return { kind: 'head', mimetype: typeOf(), filename: known.filename, size: sizeOf(info.file_size) };

  const timeoutMs = opts.timeoutMs ?? MEDIA_DOWNLOAD_TIMEOUT_MS;
  // One controller for the whole download: the deadlines below abort through it, and so does a
  // stream that is dropped (its connection goes with it).
  const abort = new AbortController();
  const headersLate = setTimeout(() => abort.abort(new Error(`the media host did not answer within ${timeoutMs} ms`)), timeoutMs);
  let res: Response;
  try {
    // No redirects: the token goes to the host Meta named and nowhere else. `identity`: fetch
    // would otherwise ask for gzip/br and decompress, and the length we pass on would be wrong.
    res = await providerFetch(info.url, {
      method: 'GET',
      headers: { authorization: `Bearer ${conn.accessToken}`, 'accept-encoding': 'identity' },
      signal: abort.signal,
      dispatcher: conn.dispatcher,
    });
  } catch (err) {
    if (blockedAddress(err)) throw privateAddress('the media URL the Graph API gave');
    throw new AppError('unavailable', `the media could not be downloaded: ${(err as Error).message}`);
  } finally {
    clearTimeout(headersLate);
  }
  if (res.status !== 200 || !res.body) {
    await res.body?.cancel();
    throw graphFailure(res.status, undefined, 'downloading the media');
  }
  // A host may compress though asked not to; fetch then hands us the decompressed bytes, and its
  // Content-Length (the compressed size) is not theirs: send without a length.
  const encoded = (res.headers.get('content-encoding') ?? '').split(',').some((c) => !['', 'identity'].includes(c.trim().toLowerCase()));
  return {
    kind: 'stream',
    body: untilStalled(res.body as ReadableStream<Uint8Array>, abort, timeoutMs),
    mimetype: typeOf(res),
    filename: known.filename,
    size: encoded ? null : sizeOf(res.headers.get('content-length') ?? info.file_size),
  };
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

/** The guard refused the connection (fetch wraps its error as a cause). */
const blockedAddress = (err: unknown): boolean => errorCodes(err).includes(BLOCKED_ADDRESS_CODE);

const privateAddress = (what: string) =>
  new AppError('unprocessable', `${what} is a loopback or private address: media are fetched from public addresses only (CLOUD_API_ALLOW_PRIVATE_URLS=true allows others, for tests or a local proxy)`);

// Meta forgets media after about 30 days and answers 400/404 for it; a refused token is the
// channel's configuration, not the caller's request; anything else is Meta being unavailable.
function graphFailure(status: number, json: unknown, doing: string): AppError {
  const e = graphErrorOf(json);
  const words = e.message ? `: ${e.message}` : '';
  if (status === 400 || status === 404 || status === 410) return new AppError('not_found', `Meta no longer has this media (${doing} answered ${status}${words})`);
  if (status === 401 || status === 403) return new AppError('unprocessable', `Meta refused the channel's access token while ${doing}${words}`);
  return new AppError('unavailable', `Meta answered ${status} while ${doing}${words}`);
}
