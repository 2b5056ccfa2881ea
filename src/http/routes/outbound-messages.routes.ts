// POST /messages: send a reply through a channel. The message is stored as queued and the answer is
// 202 at once; a sender delivers it to the provider (message.sent, or message.failed with the
// provider's reason after the retries). The read side of /messages lives in messages.routes.ts.
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from '../app.ts';
import { answerWithin } from '../idempotency.ts';
import { OUTBOUND_TYPES } from '../../channels/sender.ts';
import { makeOutboundMessages } from '../../services/outbound-messages.service.ts';
import { Uuid } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';

const Template = Type.Object(
  {
    name: Type.String({ minLength: 1, maxLength: 512, pattern: '^[a-z0-9_]+$', description: 'The template name as approved in WhatsApp Manager (lower case, digits, underscores)' }),
    language: Type.String({ minLength: 2, maxLength: 15, pattern: '^[a-z]{2,3}(_[A-Za-z0-9]{2,4})?$', description: 'The template language code, like pt_BR or en_US' }),
    components: Type.Optional(
      Type.Array(Type.Object({ type: Type.String({ minLength: 1, maxLength: 32 }) }, { additionalProperties: true }), {
        maxItems: 20,
        description: "The template's parameters (header, body, buttons), in the Cloud API's form; passed to Meta as given (at most 16 KiB as JSON)",
      }),
    ),
  },
  { additionalProperties: false, description: 'A message template (type template, WhatsApp Cloud API channels only)' },
);

const SendBody = Type.Object(
  {
    channel_id: Uuid,
    contact_id: Type.Optional(Uuid),
    phone: Type.Optional(Type.String({ minLength: 3, maxLength: 32, description: 'E.164; the contact is created if the project has none with it' })),
    type: Type.Unsafe<(typeof OUTBOUND_TYPES)[number]>({ type: 'string', enum: [...OUTBOUND_TYPES] }),
    text: Type.Optional(Type.String({ minLength: 1, maxLength: 4096, description: 'The body of a text message (or the caption of a media one)' })),
    media_url: Type.Optional(Type.String({ minLength: 1, maxLength: 2048, description: 'http(s) URL the provider fetches the media from' })),
    caption: Type.Optional(Type.String({ maxLength: 1024 })),
    filename: Type.Optional(Type.String({ minLength: 1, maxLength: 255 })),
    mimetype: Type.Optional(Type.String({ minLength: 3, maxLength: 128, description: 'Guessed from the file name or URL when absent' })),
    reply_to: Type.Optional(Type.String({ minLength: 1, maxLength: 512, description: 'The id of the message replied to (ours, or the provider’s)' })),
    template: Type.Optional(Template),
  },
  { additionalProperties: false, description: 'Exactly one of contact_id and phone' },
);

const Queued = Type.Object({ id: Uuid, status: Type.Literal('queued') }, { title: 'QueuedMessage' });

export async function outboundMessagesRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const outbound = makeOutboundMessages({ db: deps.db, broker: deps.broker, logger: deps.logger, wahaMediaMustBePublic: !deps.config.wahaAllowPrivateUrls });

  defineRoute(app, {
    method: 'POST',
    url: '/messages',
    summary: 'Send a message (text, image, document, audio, video, template)',
    description:
      'Stored as queued and answered with 202; GET /messages/{id} shows it move to sent, delivered, read — or failed with the reason. Replies to one contact through one channel are sent in the order they were queued. ' +
      'Type template (WhatsApp Cloud API channels only) sends an approved message template, the only message Meta lets a business send outside the 24-hour window after the customer last wrote.',
    permission: 'messages.write',
    idempotent: true,
    body: SendBody,
    response: { 202: Queued },
    problems: { 422: 'The channel cannot send (or send templates), or reply_to names no message of it' },
    handler: async (req, reply) => {
      const b = req.body;
      const answer = answerWithin(req, deps);
      const queued = (id: string) => ({ status: 202, body: { id, status: 'queued' as const }, location: `/api/v1/messages/${id}` });
      const m = await outbound.queue(req.auth, {
        channelId: b.channel_id,
        contactId: b.contact_id,
        phone: b.phone,
        type: b.type,
        text: b.text,
        mediaUrl: b.media_url,
        caption: b.caption,
        filename: b.filename,
        mimetype: b.mimetype,
        replyTo: b.reply_to,
        template: b.template,
      }, answer && ((tx, created) => answer(tx, queued(created.id))));
      const a = queued(m.id);
      return reply.code(202).header('location', a.location).send(a.body);
    },
  });
}
