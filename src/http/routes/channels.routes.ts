// /channels: a project's WhatsApp connections. Responses show the provider settings without the
// credentials (only which ones are set) and the webhook URL to give the provider — which embeds the
// ingress token, so only callers who may manage channels see it.
import { providerDispatchers } from '../../channels/provider-dispatchers.ts';
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import { can, type Caller } from '../../domain/permissions.ts';
import { AppError } from '../../errors.ts';
import { registerWahaWebhook, WAHA_WEBHOOK_EVENTS } from '../../inbound/waha-webhook-setup.ts';
import { makeChannelsService, wrongType, type ChannelView } from '../../services/channels.service.ts';
import type { AppDeps } from '../app.ts';
import { FreeObject, IdParams, ListQuery, NOT_BLANK, NoContent, Nullable, Page, Timestamp, Uuid, iso, isoOrNull, toPageBody } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';

const ChannelType = Type.Unsafe<'waha' | 'whatsapp_cloud'>({ type: 'string', enum: ['waha', 'whatsapp_cloud'] });
const Timeout = Type.Integer({ minimum: 1, maximum: 7 * 24 * 60, description: 'Minutes without messages after which a session ends' });

const Channel = Type.Object(
  {
    id: Uuid,
    name: Type.String(),
    type: ChannelType,
    status: Type.Unsafe<ChannelView['status']>({ type: 'string', enum: ['inactive', 'connecting', 'active', 'error'] }),
    status_changed_at: Nullable(Timestamp),
    config: FreeObject('Provider settings, without credentials'),
    secrets_set: Type.Array(Type.String(), { description: 'Which credentials are set (their values are never shown)' }),
    session_timeout_minutes: Type.Integer({ description: "The channel's session timeout (the configured default unless set)" }),
    session_timeout_is_default: Type.Boolean(),
    webhook_url: Nullable(Type.String({ description: 'Give this URL to the provider. Null for roles that may not manage channels' })),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'Channel' },
);

const CONFIG_HELP =
  'waha: {base_url, api_key, session, hmac_key?}; whatsapp_cloud: {phone_number_id, access_token, app_secret, verify_token, api_base_url?, api_version?}';

const CreateBody = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 200, pattern: NOT_BLANK }),
    type: ChannelType,
    config: FreeObject(CONFIG_HELP),
    session_timeout_minutes: Type.Optional(Nullable(Timeout)),
  },
  { additionalProperties: false },
);

const UpdateBody = Type.Object(
  {
    name: Type.Optional(Type.String({ minLength: 1, maxLength: 200, pattern: NOT_BLANK })),
    config: Type.Optional(FreeObject(`Keys to change; null removes an optional key. ${CONFIG_HELP}`)),
    session_timeout_minutes: Type.Optional(Nullable(Timeout)),
  },
  { additionalProperties: false, minProperties: 1 },
);

const WebhookConfigured = Type.Object({ webhook_url: Type.String(), events: Type.Array(Type.String()) });

/** SECRET_KEY as main.ts resolved it (generated under DATA_DIR in embedded mode), else the config's. */
export function secretKeyOf(deps: AppDeps): string {
  const key = deps.secretKey ?? deps.config.secretKey;
  if (!key) throw new AppError('internal', 'no SECRET_KEY: channel credentials cannot be opened');
  return key;
}

function present(c: ChannelView, caller: Caller) {
  return {
    id: c.id,
    name: c.name,
    type: c.type,
    status: c.status,
    status_changed_at: isoOrNull(c.statusChangedAt),
    config: c.config,
    secrets_set: c.secretsSet,
    session_timeout_minutes: c.effectiveTimeoutMinutes,
    session_timeout_is_default: c.sessionTimeoutMinutes === null,
    webhook_url: can(caller.role, 'channels.manage') ? c.webhookUrl : null,
    created_at: iso(c.createdAt),
    updated_at: iso(c.updatedAt),
  };
}

export async function channelsRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const wahaDispatcher = providerDispatchers(deps.config).waha;
  let service: ReturnType<typeof makeChannelsService> | undefined;
  // Built on first use: an app without a secret key still starts (and says why channels fail).
  const channels = () =>
    (service ??= makeChannelsService({
      db: deps.db,
      secretKey: secretKeyOf(deps),
      publicUrl: deps.config.publicUrl,
      defaultSessionTimeoutMinutes: deps.config.sessionTimeoutMinutes,
    }));

  defineRoute(app, {
    method: 'GET',
    url: '/channels',
    summary: 'List channels, newest first',
    permission: 'channels.read',
    querystring: ListQuery(),
    response: { 200: Page(Channel) },
    handler: async (req) => toPageBody(await channels().list(req.auth.projectId, req.query), (c) => present(c, req.auth)),
  });

  defineRoute(app, {
    method: 'POST',
    url: '/channels',
    summary: 'Create a channel',
    description: `Credentials are encrypted at rest and never shown again. ${CONFIG_HELP}`,
    permission: 'channels.manage',
    idempotent: true,
    body: CreateBody,
    response: { 201: Channel },
    handler: async (req, reply) => {
      const c = await channels().create(req.auth.projectId, {
        name: req.body.name,
        type: req.body.type,
        config: req.body.config,
        sessionTimeoutMinutes: req.body.session_timeout_minutes ?? null,
      });
      return reply.code(201).header('location', `/api/v1/channels/${c.id}`).send(present(c, req.auth));
    },
  });

  defineRoute(app, {
    method: 'GET',
    url: '/channels/:id',
    summary: 'Get a channel',
    permission: 'channels.read',
    params: IdParams,
    response: { 200: Channel },
    handler: async (req) => present(await channels().get(req.auth.projectId, req.params.id), req.auth),
  });

  defineRoute(app, {
    method: 'PATCH',
    url: '/channels/:id',
    summary: "Update a channel's name, settings, credentials or session timeout",
    permission: 'channels.manage',
    params: IdParams,
    body: UpdateBody,
    response: { 200: Channel },
    handler: async (req) => {
      const c = await channels().update(req.auth.projectId, req.params.id, {
        name: req.body.name,
        config: req.body.config,
        sessionTimeoutMinutes: req.body.session_timeout_minutes,
      });
      // This process's ingress forgets the old settings now; other processes hear it by NOTIFY.
      deps.channelDirectory?.invalidate(c.id);
      return present(c, req.auth);
    },
  });

  defineRoute(app, {
    method: 'DELETE',
    url: '/channels/:id',
    summary: 'Delete a channel',
    description: 'Its webhooks are refused from now on; its conversations stay.',
    permission: 'channels.manage',
    params: IdParams,
    response: { 204: NoContent },
    handler: async (req, reply) => {
      await channels().remove(req.auth.projectId, req.params.id);
      deps.channelDirectory?.invalidate(req.params.id);
      return reply.code(204).send();
    },
  });

  defineRoute(app, {
    method: 'POST',
    url: '/channels/:id/configure-webhook',
    summary: 'Register our webhook on the WAHA session',
    description: `Sets the WAHA session's webhook to this channel's webhook_url for: ${WAHA_WEBHOOK_EVENTS.join(', ')} (with the HMAC key when the channel has one).`,
    permission: 'channels.manage',
    params: IdParams,
    response: { 200: WebhookConfigured },
    problems: { 422: 'Not a WAHA channel, or WAHA refused or could not be reached' },
    handler: async (req) => {
      const { channel, secrets, webhookUrl } = await channels().withSecrets(req.auth.projectId, req.params.id);
      if (channel.type !== 'waha') throw wrongType('waha');
      await registerWahaWebhook({
        baseUrl: String(channel.config.base_url),
        session: String(channel.config.session),
        apiKey: secrets.api_key ?? '',
        hmacKey: secrets.hmac_key,
        url: webhookUrl,
        dispatcher: wahaDispatcher,
      });
      return { webhook_url: webhookUrl, events: [...WAHA_WEBHOOK_EVENTS] };
    },
  });
}
