// Provider webhook ingress (contract.md §2): WAHA and the Meta Cloud API post here. These routes
// are public — they authenticate by the channel's token or the provider's signature over the raw
// bytes — so their scope keeps the body as a Buffer (no JSON parser) and the ingress checks it.
import type { FastifyInstance, FastifyReply } from 'fastify';
import { Type } from '@sinclair/typebox';
import { AppError } from '../../errors.ts';
import { makeChannelDirectory, type ChannelDirectory } from '../../inbound/channel-directory.ts';
import { makeIngress } from '../../inbound/ingress.ts';
import { cloudProvider, cloudSubscriptionChallenge, wahaProvider, type InboundProvider } from '../../inbound/providers.ts';
import { inboundAckDuration } from '../../observability/metrics.ts';
import { BODY_LIMIT, type AppDeps } from '../app.ts';
import { defineRoute, type TypedRequest } from '../schemas/route.ts';
import { secretKeyOf } from './channels.routes.ts';

/** The Cloud ingress's body limit: Meta's webhook bodies reach 3 MB. */
export const CLOUD_BODY_LIMIT = 3 * 1024 * 1024;

const Params = Type.Object({ channel_id: Type.String({ maxLength: 64, description: 'The channel id, as in its webhook_url' }) });
const Queued = Type.Object({ status: Type.Literal('queued'), event_id: Type.String({ format: 'uuid' }) });
const HubQuery = Type.Object({
  'hub.mode': Type.Optional(Type.String()),
  'hub.verify_token': Type.Optional(Type.String()),
  'hub.challenge': Type.Optional(Type.String()),
}, { additionalProperties: true }); // Meta's to extend: a parameter we do not know is not an error
const IngressProblems = {
  400: 'The body is not a UTF-8 JSON object',
  401: 'Token or signature missing or wrong',
  404: 'No channel of this provider with this id',
  413: 'Body larger than 1 MiB',
  503: 'Neither the broker nor the database accepted the webhook; retry',
};

export async function webhooksIngressRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const ingress = makeIngress({
    db: deps.db,
    broker: deps.broker,
    logger: deps.logger,
    channels: deps.channelDirectory ?? (await ownDirectory(app, deps)), // buildApp gives one
  });

  const receive = (provider: InboundProvider) => async (req: TypedRequest<typeof Params, undefined, undefined>, reply: FastifyReply) => {
    const rawBody = Buffer.isBuffer(req.body) ? req.body : Buffer.alloc(0);
    const query = (req.query ?? {}) as Record<string, unknown>;
    const { eventId } = await ingress.accept(provider, req.params.channel_id, { rawBody, headers: req.headers, query }, req.id);
    inboundAckDuration.observe(reply.elapsedTime / 1000);
    return reply.code(200).send({ status: 'queued', event_id: eventId });
  };

  await app.register(async (scope) => {
    // The signature covers the exact bytes: keep them, whatever the Content-Type says.
    scope.removeAllContentTypeParsers();
    scope.addContentTypeParser('*', { parseAs: 'buffer', bodyLimit: BODY_LIMIT }, (_req, body, done) => done(null, body));

    defineRoute(scope, {
      method: 'POST',
      url: '/webhooks/waha/:channel_id',
      tags: ['webhooks'],
      summary: 'WAHA webhook ingress',
      description: 'Token as `?token=` or `X-Webhook-Token`; `X-Webhook-Hmac` (hex HMAC-SHA512 of the body) is required when the channel has an hmac_key. Answers once the event is durable; processing is asynchronous.',
      public: true,
      params: Params,
      response: { 200: Queued },
      problems: IngressProblems,
      handler: receive(wahaProvider),
    });

    defineRoute(scope, {
      method: 'POST',
      url: '/webhooks/whatsapp/:channel_id',
      tags: ['webhooks'],
      summary: 'Meta WhatsApp Cloud API webhook ingress',
      description: '`X-Hub-Signature-256: sha256=<hex HMAC-SHA256 of the body with the app secret>` is required. Bodies up to 3 MiB (Meta sends up to 3 MB).',
      public: true,
      params: Params,
      response: { 200: Queued },
      problems: { ...IngressProblems, 413: 'Body larger than 3 MiB' },
      // Meta documents webhook bodies of up to 3 MB (a batch of statuses): refused, one would be
      // retried by Meta for days and then dropped, with everything in it.
      bodyLimit: CLOUD_BODY_LIMIT,
      handler: receive(cloudProvider),
    });

    defineRoute(scope, {
      method: 'GET',
      url: '/webhooks/whatsapp/:channel_id',
      tags: ['webhooks'],
      summary: 'Meta webhook verification',
      description: 'Answers `hub.challenge` as text when `hub.verify_token` is the channel verify_token.',
      public: true,
      params: Params,
      querystring: HubQuery,
      response: { 200: Type.String({ description: 'The challenge, as text/plain' }) },
      problems: { 403: 'hub.mode is not subscribe, or the verify token does not match' },
      handler: async (req, reply) => {
        const channel = await ingress.channel(cloudProvider, req.params.channel_id);
        const challenge = cloudSubscriptionChallenge(channel, req.query);
        if (challenge === undefined) throw new AppError('forbidden', 'the verify token does not match this channel');
        return reply.code(200).type('text/plain').send(challenge);
      },
    });
  });
}

/**
 * An app built without the process-wide directory (main.ts passes one) gets its own, shared by
 * every route of the app: the channel routes drop what they change from it at once.
 */
export async function ownDirectory(app: FastifyInstance, deps: AppDeps): Promise<ChannelDirectory> {
  const directory = makeChannelDirectory({
    db: deps.db,
    secretKey: () => secretKeyOf(deps),
    defaultSessionTimeoutMinutes: deps.config.sessionTimeoutMinutes,
    logger: deps.logger,
  });
  await directory.start();
  app.addHook('onClose', () => directory.stop());
  return directory;
}
