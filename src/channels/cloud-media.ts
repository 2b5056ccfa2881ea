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

/** Big media take a while to come down; the lookup itself is quick. */
export const MEDIA_DOWNLOAD_TIMEOUT_MS = 120_000;

export type MessageMedia =
  | { kind: 'url'; url: string; mimetype: string | null; filename: string | null }
  | { kind: 'stream'; body: Readable; mimetype: string; filename: string | null; size: number | null };

/**
 * `dispatcher`: where the lookup and the download may connect. The media URL comes from the Graph
 * API's answer, and the Graph API's address from the channel's settings: without a guard, whoever
 * may edit a channel could have us fetch an internal address and hand them its bytes.
 */
export type MediaDeps = { db: Database; secretKey: string; dispatcher?: Dispatcher | undefined };

/** The media of one of the project's messages: a URL to follow, or the bytes. 404 when there is none. */
export async function messageMedia(deps: MediaDeps, projectId: string, messageId: string): Promise<MessageMedia> {
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
    return downloadCloudMedia(conn, mediaId, { mimetype, filename });
  }
  const url = str(media?.url);
  if (url) return { kind: 'url', url, mimetype, filename };
  if (mediaId) throw new AppError('not_found', 'the channel this media came through no longer exists');
  throw new AppError('not_found', 'this message has no media');
}

/** GET /{version}/{media_id} → `{url, mime_type, file_size}`, then GET that URL with the token. */
export async function downloadCloudMedia(conn: CloudConnection, mediaId: string, known: { mimetype: string | null; filename: string | null }): Promise<MessageMedia> {
  let lookup;
  try {
    lookup = await graphRequest(conn, 'GET', `/${encodeURIComponent(mediaId)}`);
  } catch (err) {
    if (blockedAddress(err)) throw privateAddress('the Graph API address of this channel');
    throw new AppError('unavailable', `the Graph API could not be reached: ${(err as Error).message}`);
  }
  if (lookup.status !== 200) throw graphFailure(lookup.status, lookup.json, 'looking the media up');
  const info = (lookup.json ?? {}) as { url?: unknown; mime_type?: unknown; file_size?: unknown };
  if (typeof info.url !== 'string' || !/^https?:\/\//.test(info.url)) throw new AppError('unavailable', 'the Graph API answered without a media URL');

  let res: Response;
  try {
    // No redirects: the token goes to the host Meta named and nowhere else.
    res = await providerFetch(info.url, { method: 'GET', headers: { authorization: `Bearer ${conn.accessToken}` }, signal: AbortSignal.timeout(MEDIA_DOWNLOAD_TIMEOUT_MS), dispatcher: conn.dispatcher });
  } catch (err) {
    if (blockedAddress(err)) throw privateAddress('the media URL the Graph API gave');
    throw new AppError('unavailable', `the media could not be downloaded: ${(err as Error).message}`);
  }
  if (res.status !== 200 || !res.body) {
    await res.body?.cancel();
    throw graphFailure(res.status, undefined, 'downloading the media');
  }
  const size = Number(res.headers.get('content-length') ?? info.file_size);
  return {
    kind: 'stream',
    body: Readable.fromWeb(res.body as import('node:stream/web').ReadableStream),
    mimetype: (typeof info.mime_type === 'string' && info.mime_type) || known.mimetype || res.headers.get('content-type') || 'application/octet-stream',
    filename: known.filename,
    size: Number.isFinite(size) && size >= 0 ? size : null,
  };
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
