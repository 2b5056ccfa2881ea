// GET /messages/{id}/media: the file of a media message, whichever provider carried it. Cloud API
// media are streamed through (their URLs need the channel's token); WAHA media redirect to the URL
// WAHA gave us. See providers.md §2 "Media".
import { Readable } from 'node:stream';
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { MEDIA_DOWNLOAD_TIMEOUT_MS, messageMedia } from '../../channels/cloud-media.ts';
import { makeGuardedDispatcher } from '../../webhooks/ssrf-guard.ts';
import type { AppDeps } from '../app.ts';
import { IdParams } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';
import { secretKeyOf } from './channels.routes.ts';

export async function messageMediaRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  // Graph API and media URLs must be public addresses unless CLOUD_API_ALLOW_PRIVATE_URLS (cloud-media.ts).
  const dispatcher = makeGuardedDispatcher({ allowPrivate: deps.config.cloudApiAllowPrivateUrls, timeoutMs: MEDIA_DOWNLOAD_TIMEOUT_MS });
  app.addHook('onClose', () => dispatcher.close());
  defineRoute(app, {
    method: 'GET',
    url: '/messages/:id/media',
    summary: "Download a message's media",
    description:
      'Cloud API media: the bytes, fetched from Meta with the channel token at request time (Content-Type is the media type). ' +
      'WAHA media: 302 to the URL WAHA stored. 404 when the message has no media or Meta no longer keeps it (about 30 days). ' +
      'HEAD answers from the lookup alone (its status, Content-Type, Content-Length from Meta\'s file_size) and downloads nothing.',
    permission: 'messages.read',
    params: IdParams,
    response: {
      200: Type.Unsafe<unknown>({ type: 'string', format: 'binary', description: 'The media file' }),
      302: Type.Null({ description: 'Location: the media URL' }),
    },
    problems: { 422: "Meta refused the channel's access token, or the channel's Graph API address (or the media URL it gave) is not public", 503: 'Meta could not be reached; retry' },
    handler: async (req, reply) => {
      // Fastify answers HEAD with this handler too, and would read a streamed body to its end
      // before dropping it: a HEAD only looks the media up.
      const head = req.method === 'HEAD';
      const media = await messageMedia({ db: deps.db, secretKey: secretKeyOf(deps), dispatcher }, req.auth.projectId, req.params.id, { download: !head });
      if (media.kind === 'url') return reply.redirect(media.url, 302);
      reply.header('content-type', media.mimetype).header('cache-control', 'private, max-age=300');
      if (media.size !== null) reply.header('content-length', String(media.size));
      if (media.filename) reply.header('content-disposition', `inline; filename*=UTF-8''${encodeURIComponent(media.filename)}`);
      // For a HEAD an empty stream, not an empty body: Fastify would set Content-Length: 0 for that.
      return reply.code(200).send(media.kind === 'stream' ? media.body : Readable.from([]));
    },
  });
}
