// The file behind a message's media, whichever provider carried it (GET /messages/{id}/media):
// Cloud API media are looked up and streamed with the channel's token (cloud-media.ts), WAHA's own
// files of the channel's session are streamed from the channel's WAHA with its API key
// (waha-media.ts), and any other URL — a reply's media_url among them — is the caller's to follow.
import type { Dispatcher } from 'undici';
import type { Database } from '../db/database.ts';
import { findChannel } from '../db/channels.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { AppError, notFound } from '../errors.ts';
import { openChannelSecrets } from '../services/channels.service.ts';
import { cloudConnectionOf } from './cloud.client.ts';
import { downloadCloudMedia } from './cloud-media.ts';
import type { MediaOptions, MessageMedia } from './media-download.ts';
import { downloadWahaMedia, wahaFilePath, wahaFileUrl } from './waha-media.ts';
import { wahaConnectionOf } from './waha.client.ts';

/**
 * Where the lookups and downloads may connect, per provider. The addresses come from a channel's
 * settings and from the provider's answers: without a guard, whoever may edit a channel could
 * have us fetch an internal address and hand them its bytes.
 */
export type MediaDeps = { db: Database; secretKey: string; dispatchers?: { cloud?: Dispatcher | undefined; waha?: Dispatcher | undefined } };

/** The media of one of the project's messages: a URL to follow, or the bytes (with `download: false`, what they are). 404 when there is none. */
export async function messageMedia(deps: MediaDeps, projectId: string, messageId: string, opts: MediaOptions = {}): Promise<MessageMedia> {
  const found = await withTransaction(
    deps.db,
    async (tx) => {
      const r = await tx.query<{ channel_id: string; media: Record<string, unknown> | null; from_api: boolean }>(
        "SELECT channel_id, media, metadata->>'sent_by' IS NOT NULL AS from_api FROM messages WHERE project_id = $1 AND id = $2",
        [projectId, messageId],
      );
      const row = r.rows[0];
      if (!row) throw notFound('message');
      const channel = await findChannel(tx, projectId, row.channel_id);
      // A reply sent through our API (only those have `sent_by`) keeps the media_url its caller
      // gave, its echo folded in. (`source: "api"` alone is WAHA's word for a message any client
      // of WAHA's API sent: WAHA's own file, like any other.)
      return { media: row.media, channel, fromApi: row.from_api === true };
    },
    { projectId },
  );
  const { media, channel, fromApi } = found;
  const str = (v: unknown) => (typeof v === 'string' && v ? v : null);
  const mimetype = str(media?.mimetype) ?? str(media?.mime_type);
  const filename = str(media?.filename);
  const mediaId = str(media?.media_id);
  const url = str(media?.url);
  if (mediaId && channel?.type === 'whatsapp_cloud') {
    const conn = { ...cloudConnectionOf({ config: channel.config, secrets: openChannelSecrets(deps.secretKey, channel.secrets) }), dispatcher: deps.dispatchers?.cloud };
    return downloadCloudMedia(conn, mediaId, { mimetype, filename }, opts);
  }
  if (url && channel?.type === 'waha' && !fromApi) {
    const conn = wahaConnectionOf({ config: channel.config, secrets: openChannelSecrets(deps.secretKey, channel.secrets) }, undefined, deps.dispatchers?.waha);
    const path = wahaFilePath(url, conn.session);
    if (path) {
      const fileUrl = wahaFileUrl(conn.baseUrl, path);
      if (!fileUrl) throw new AppError('unprocessable', "the channel's base_url is not an http(s) URL: WAHA's files cannot be fetched");
      return downloadWahaMedia(conn, fileUrl, { mimetype, filename }, opts);
    }
  }
  if (url) return { kind: 'url', url, mimetype, filename };
  if (mediaId) throw new AppError('not_found', 'the channel this media came through no longer exists');
  throw new AppError('not_found', 'this message has no media');
}
