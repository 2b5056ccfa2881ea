// The file behind a WAHA message's media (GET /messages/{id}/media). WAHA downloads a message's
// media itself and names it in the webhook as `{WAHA's own base URL}/api/files/{session}/{file}`:
// the address WAHA believes it has (often `http://localhost:3000`), behind WAHA's API key. Neither
// is the API client's to use, so the file is fetched from the channel's base_url — where we reach
// WAHA — with the channel's API key, and streamed through (media-download.ts). A URL elsewhere
// (WAHA's S3 storage hands out presigned links) needs no key of ours: the client is sent there.
//
// One WAHA key opens every session's files on that server, and a WAHA may serve several
// channels (several projects): only a file of the channel's own session is fetched, and only for
// a message whose media WAHA named (not a reply's media_url, which the API's caller chose).
import { AppError } from '../errors.ts';
import { fetchMedia, type MediaOptions, type MessageMedia } from './media-download.ts';
import { wahaBlockedText, type WahaConnection } from './waha.client.ts';
import { parseHttpUrl, parseUrl } from '../url.ts';

const FILES_PATH = '/api/files/';

/**
 * The path and query of the session's file a stored media URL names (`/api/files/{session}/{file}`),
 * or undefined when it names no file of that session. Parsing has resolved `..` and `%2e%2e`
 * segments; the file is one segment, with no encoded slash or backslash to become one on WAHA.
 */
export function wahaFilePath(stored: string, session: string): string | undefined {
  const named = parseUrl(stored);
  if (!named) return undefined;
  const prefix = `${FILES_PATH}${encodeURIComponent(session)}/`;
  const at = named.pathname.indexOf(prefix);
  if (at < 0) return undefined;
  const file = named.pathname.slice(at + prefix.length);
  if (!/^[^/\\]+$/.test(file) || /%(2f|5c)/i.test(file) || /^(\.|%2e)+$/i.test(file)) return undefined;
  return `${prefix}${file}${named.search}`;
}

/** That file on the channel's WAHA: `path` (wahaFilePath's) after the base_url, whose own path is kept; undefined when base_url is not an http(s) URL. */
export function wahaFileUrl(baseUrl: string, path: string): string | undefined {
  const base = parseHttpUrl(baseUrl);
  if (!base) return undefined;
  return `${base.origin}${base.pathname.replace(/\/+$/, '')}${path}`;
}

/** The file from the channel's WAHA (a HEAD when `opts.download` is false); `fileUrl` is wahaFileUrl's. */
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
