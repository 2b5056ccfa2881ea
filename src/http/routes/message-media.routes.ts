// GET /messages/{id}/media: the file of a media message, whichever provider carried it. Cloud API
// media and WAHA's own files are streamed through (they need the channel's token or API key); any
// other URL a message names is a redirect. See providers.md "Media".
import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { MEDIA_DOWNLOAD_TIMEOUT_MS } from '../../channels/media-download.ts';
import { messageMedia } from '../../channels/message-media.ts';
import { makeGuardedDispatcher } from '../../webhooks/ssrf-guard.ts';
import type { AppDeps } from '../app.ts';
import { IdParams } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';
import { secretKeyOf } from './channels.routes.ts';

export async function messageMediaRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  // Graph API and media URLs must be public addresses unless CLOUD_API_ALLOW_PRIVATE_URLS; a WAHA
  // base_url may be private unless WAHA_ALLOW_PRIVATE_URLS=false (provider-dispatchers.ts). Their
  // own dispatchers here: a download waits on the media host longer than a provider call does.
  const dispatchers = {
    cloud: makeGuardedDispatcher({ allowPrivate: deps.config.cloudApiAllowPrivateUrls, timeoutMs: MEDIA_DOWNLOAD_TIMEOUT_MS }),
    waha: makeGuardedDispatcher({ allowPrivate: deps.config.wahaAllowPrivateUrls, timeoutMs: MEDIA_DOWNLOAD_TIMEOUT_MS }),
  };
  app.addHook('onClose', () => Promise.all([dispatchers.cloud.close(), dispatchers.waha.close()]));
  defineRoute(app, {
    method: 'GET',
    url: '/messages/:id/media',
    summary: "Download a message's media",
    description:
      'Cloud API media: the bytes, fetched from Meta with the channel token at request time (Content-Type is the media type). ' +
      "WAHA media: WAHA's own files (`…/api/files/…`) are fetched from the channel's base_url with its API key and streamed the same way; " +
      'a URL elsewhere (presigned S3 links) is a 302 to it. 404 when the message has no media, or Meta (about 30 days) or WAHA (WHATSAPP_FILES_LIFETIME) no longer keeps it. ' +
      "HEAD downloads nothing: for Cloud media it answers from Meta's lookup (Content-Length from its file_size), for WAHA files from WAHA's answer to a HEAD.",
    permission: 'messages.read',
    params: IdParams,
    response: {
      200: Type.Unsafe<unknown>({ type: 'string', format: 'binary', description: 'The media file' }),
      302: Type.Null({ description: 'Location: the media URL' }),
    },
    problems: {
      422: "The provider refused the channel's access token or API key, or the channel's address (or the media URL Meta gave) is not one this deployment lets channels reach",
      503: 'The provider could not be reached; retry',
    },
    handler: async (req, reply) => {
      // Fastify answers HEAD with this handler too, and would read a streamed body to its end
      // before dropping it: a HEAD only looks the media up.
      const head = req.method === 'HEAD';
      const media = await messageMedia({ db: deps.db, secretKey: secretKeyOf(deps), dispatchers }, req.auth.projectId, req.params.id, { download: !head });
      if (media.kind === 'url') return reply.redirect(media.url, 302);
      // The type comes from the provider's payload (whoever posts to a channel's webhook): served
      // from the API's own address, a file must not run as a page there.
      reply
        .header('content-type', servableType(media.mimetype))
        .header('cache-control', 'private, max-age=300')
        .header('x-content-type-options', 'nosniff')
        .header('content-security-policy', "default-src 'none'; sandbox");
      if (media.size !== null) reply.header('content-length', String(media.size));
      if (media.filename) reply.header('content-disposition', `inline; filename*=UTF-8''${encodeURIComponent(media.filename)}`);
      // For a HEAD an empty stream, not an empty body: Fastify would set Content-Length: 0 for that.
      return reply.code(200).send(media.kind === 'stream' ? media.body : Readable.from([]));
    },
  });
}

/**
 * A media type as `type/subtype` with parameters, in printable ASCII, or octet-stream for anything
 * else: a header with a control or non-ASCII character would fail the answer.
 */
function servableType(mimetype: string): string {
  const t = mimetype.trim();
  return /^[\x20-\x7e]+$/.test(t) && /^[\w.+-]+\/[\w.+-]+( *; *[\w.+-]+=("[^"]*"|[^;"]*))*$/.test(t) ? t : 'application/octet-stream';
}
