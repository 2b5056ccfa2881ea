// The file behind a WAHA message's media (GET /messages/{id}/media). WAHA downloads a message's
// media itself and names it in the webhook as `{WAHA's own base URL}/api/files/{session}/{file}`:
// the address WAHA believes it has (often `http://localhost:3000`), behind WAHA's API key. Neither
// is the API client's to use, so the file is fetched from the channel's base_url — where we reach
// WAHA — with the channel's API key, and streamed through (media-download.ts). A URL elsewhere
// (WAHA's S3 storage hands out presigned links) needs no key of ours: the client is sent there.
import { AppError } from '../errors.ts';
import { fetchMedia, type MediaOptions, type MessageMedia } from './media-download.ts';
import { wahaBlockedText, type WahaConnection } from './waha.client.ts';

const FILES_PATH = '/api/files/';

/** Where, on the channel's WAHA, the file a stored media URL names is served; undefined when the URL is not one of WAHA's files. */
export function wahaFileUrl(stored: string, baseUrl: string): string | undefined {
  let named: URL;
  let base: URL;
  try {
    named = new URL(stored);
    base = new URL(baseUrl);
  } catch {
    return undefined;
  }
  if (!/^https?:$/.test(base.protocol)) return undefined;
  // Parsing has resolved `..` and `%2e%2e` segments: what follows /api/files/ stays under it.
  const at = named.pathname.indexOf(FILES_PATH);
  if (at < 0 || named.pathname.length === at + FILES_PATH.length) return undefined;
  const prefix = base.pathname.replace(/\/+$/, '');
  return `${base.origin}${prefix}${named.pathname.slice(at)}${named.search}`;
}

/** The file from the channel's WAHA (a HEAD when `opts.download` is false); `url` is a stored media URL wahaFileUrl accepts. */
export async function downloadWahaMedia(conn: WahaConnection, fileUrl: string, known: { mimetype: string | null; filename: string | null }, opts: MediaOptions = {}): Promise<MessageMedia> {
  return fetchMedia(
    {
      url: fileUrl,
      headers: conn.apiKey ? { 'x-api-key': conn.apiKey } : {},
      dispatcher: conn.dispatcher,
      known,
      refused: (status) => wahaFailure(status),
      unreachable: (err, blocked) =>
        new AppError(blocked ? 'unprocessable' : 'unavailable', blocked ? wahaBlockedText(conn) : `WAHA could not be reached for the media: ${(err as Error).message}`),
    },
    opts,
  );
}

// WAHA deletes the files it downloaded after WHATSAPP_FILES_LIFETIME seconds (180 by default): a
// 404 is, most often, that. A refused key is the channel's configuration, not the caller's request.
function wahaFailure(status: number): AppError {
  if (status === 404 || status === 410)
    return new AppError('not_found', `WAHA no longer has this file (it answered ${status}; WAHA deletes downloaded media after WHATSAPP_FILES_LIFETIME seconds, 180 by default — 0 keeps them)`);
  if (status === 401 || status === 403) return new AppError('unprocessable', `WAHA refused the channel's API key while sending the media (it answered ${status})`);
  return new AppError('unavailable', `WAHA answered ${status} while sending the media`);
}
