// The file behind a Cloud API message's media (GET /messages/{id}/media). The Cloud API delivers
// media as ids: the Graph API turns an id into a short-lived URL (about 5 minutes), and that URL
// itself only answers with the channel's access token. Handing the URL to a client would mean
// handing out the token, so we look the id up and stream the bytes through (media-download.ts).
import { AppError } from '../errors.ts';
import { graphErrorOf, graphRequest, type CloudConnection } from './cloud.client.ts';
import { isBlockedAddress } from './provider-http.ts';
import { fetchMedia, sizeOf, type MediaOptions, type MessageMedia } from './media-download.ts';

/**
 * GET /{version}/{media_id} → `{url, mime_type, file_size}`, then GET that URL with the token
 * (unless `opts.download` is false: then the lookup's description only).
 */
export async function downloadCloudMedia(conn: CloudConnection, mediaId: string, known: { mimetype: string | null; filename: string | null }, opts: MediaOptions = {}): Promise<MessageMedia> {
  let lookup;
  try {
    lookup = await graphRequest(conn, 'GET', `/${encodeURIComponent(mediaId)}`);
  } catch (err) {
    if (isBlockedAddress(err)) throw privateAddress('the Graph API address of this channel');
    throw new AppError('unavailable', `the Graph API could not be reached: ${(err as Error).message}`);
  }
  if (lookup.bodyBroken) throw new AppError('unavailable', `the Graph API broke off its answer: ${lookup.bodyBroken}`);
  if (lookup.status !== 200) throw graphFailure(lookup.status, lookup.json, 'looking the media up');
  const info = (lookup.json ?? {}) as { url?: unknown; mime_type?: unknown; file_size?: unknown };
  if (typeof info.url !== 'string' || !/^https?:\/\//.test(info.url)) throw new AppError('unavailable', 'the Graph API answered without a media URL');
  const mimetype = (typeof info.mime_type === 'string' && info.mime_type) || known.mimetype;
  if (opts.download === false) return { kind: 'head', mimetype: mimetype || 'application/octet-stream', filename: known.filename, size: sizeOf(info.file_size) };
  return fetchMedia(
    {
      url: info.url,
      headers: { authorization: `Bearer ${conn.accessToken}` },
      dispatcher: conn.dispatcher,
      known: { mimetype, filename: known.filename },
      sizeHint: info.file_size,
      refused: (status) => graphFailure(status, undefined, 'downloading the media'),
      unreachable: (err, blocked) =>
        blocked ? privateAddress('the media URL the Graph API gave') : new AppError('unavailable', `the media could not be downloaded: ${(err as Error).message}`),
    },
    opts,
  );
}

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
