// Replies: POST /messages stores the message as queued (202) and wakes a sender; the sender
// consumer reports each attempt's outcome here, and each outcome commits with its events.
//
// Counting: a reply counts on its session when the provider accepts it (not when it is queued),
// exactly as the inbound processor counts a message typed on the phone — that is what pushes the
// session's due time and sets the first response time. The provider's echo of the reply is then a
// duplicate to the processor (same provider id) and counts nothing.
import { isIP } from 'node:net';
import type { Broker } from '../broker/broker.ts';
import { PROJECT_HEADER } from '../broker/broker.ts';
import { Queues } from '../broker/topology.ts';
import { makeMediaLookup } from '../channels/media-lookup.ts';
import { senderFor } from '../channels/senders.ts';
import type { OutboundTemplate, OutboundType } from '../channels/sender.ts';
import { findChannel } from '../db/channels.sql.ts';
import { findContactIdByPhone, insertContact, lockContact } from '../db/contacts-api.sql.ts';
import { contactNotFound } from '../db/contacts-read.sql.ts';
import type { Database, Queryable } from '../db/database.ts';
import type { MessageRecord } from '../db/messages-read.sql.ts';
import {
  contactOfExternalKey, countReplyOnClosedSession, databaseClock, deleteMessage, externalIdOf, insertOutboundMessage, lockConversationPhone, lockEcho, lockQueued, markFailed, markSent, nextQueuedInConversation, scheduleRetry, touchContactForReply,
  type SendJob,
} from '../db/outbound.sql.ts';
import { endOverdueSession, settleLateSessions } from '../db/session-lifecycle.sql.ts';
import { touchActiveSession } from '../db/sessions.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { newEvent, type EventEnvelope, type MessageData, type MessageStatus, type MessageType } from '../domain/events.ts';
import { isUuid, uuidv7 } from '../domain/ids.ts';
import type { Caller } from '../domain/permissions.ts';
import { normalizePhone, waIdFromPhone } from '../domain/phone.ts';
import { AppError, invalid, notFound } from '../errors.ts';
import { wahaMessageKey } from '../inbound/waha/waha-jid.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';
import { contactData } from '../inbound/payloads.ts';
import { statusEvent } from './inbound.service.ts';
import { actorOf, sessionEndedEvent } from './session-lifecycle.service.ts';
import { checkWebhookUrl, isLinkLocalAddress, WebhookUrlError, type ResolveHost } from '../webhooks/ssrf-guard.ts';
import { parseHttpUrl, parseUrl } from '../url.ts';

export type QueueMessageInput = {
  channelId: string;
  contactId?: string;
  phone?: string;
  type: OutboundType;
  text?: string;
  mediaUrl?: string;
  caption?: string;
  filename?: string;
  mimetype?: string;
  /** Our message id (UUID) of the message replied to, or the provider's id of it. */
  replyTo?: string;
  /** Type `template`: the approved template, its language and its parameters (Cloud API channels only). */
  template?: OutboundTemplate;
};

export function messageData(m: MessageRecord): MessageData {
  return {
    message_id: m.id,
    contact_id: m.contactId,
    session_id: m.sessionId,
    channel_id: m.channelId,
    direction: m.direction,
    from_me: m.fromMe,
    type: m.type as MessageType,
    text: m.text,
    media: m.media,
    location: m.location,
    contact_card: m.contactCard,
    external_id: m.externalId,
    status: m.status as MessageStatus,
    timestamp: m.timestamp.toISOString(),
    reply_to_external_id: m.replyToExternalId,
  };
}

/** A failed send as stored on the message (`error`): `title` and `details` are the provider's or null. */
export type SendFailure = { message: string; code: string | null; title: string | null; details: string | null };

/** WhatsApp's limit on a media caption. */
const MAX_CAPTION = 1024;
/** A template's components as JSON, at most: Meta's own limits (a body of 1,024 characters, ten buttons…) are far below. */
export const MAX_TEMPLATE_COMPONENTS_BYTES = 16 * 1024;

function checkInput(i: QueueMessageInput): void {
  if ((i.contactId === undefined) === (i.phone === undefined)) {
    throw invalid('give exactly one of contact_id and phone', [{ field: 'contact_id', message: 'or phone, not both, not neither' }]);
  }
  if (i.type === 'template' || i.template !== undefined) return checkTemplate(i);
  if (i.type === 'text') {
    if (!i.text?.trim()) throw invalid('a text message needs text', [{ field: 'text', message: 'required for type text' }]);
    if (i.mediaUrl) throw invalid('a text message has no media_url', [{ field: 'media_url', message: 'only for media types' }]);
    return;
  }
  if (!i.mediaUrl) throw invalid(`a ${i.type} message needs media_url`, [{ field: 'media_url', message: `required for type ${i.type}` }]);
  // A media message's text is its caption: one or the other, within a caption's length (WhatsApp
  // takes 1,024 characters), and none on audio, which WhatsApp shows without one.
  if (i.text !== undefined && i.caption !== undefined) {
    throw invalid('a media message has one caption: give caption or text, not both', [{ field: 'text', message: 'the caption is already given' }]);
  }
  const caption = i.caption ?? i.text;
  if (caption !== undefined && caption.length > MAX_CAPTION) {
    throw invalid(`a caption has at most ${MAX_CAPTION} characters`, [{ field: i.caption !== undefined ? 'caption' : 'text', message: `longer than ${MAX_CAPTION} characters` }]);
  }
  if (i.type === 'audio' && caption !== undefined && caption.trim() !== '') {
    throw invalid('an audio message has no caption', [{ field: i.caption !== undefined ? 'caption' : 'text', message: 'not sent with audio' }]);
  }
  if (!parseHttpUrl(i.mediaUrl)) {
    throw invalid('media_url must be an http(s) URL the provider can fetch', [{ field: 'media_url', message: 'not an http(s) URL' }]);
  }
}

/**
 * A template message is its template: no text, media or caption of its own (the template's
 * parameters carry them), and no reply_to (the Cloud API quotes nothing in a template message).
 */
function checkTemplate(i: QueueMessageInput): void {
  if (i.type !== 'template') throw invalid(`a ${i.type} message has no template`, [{ field: 'template', message: 'only for type template' }]);
  if (!i.template) throw invalid('a template message needs template', [{ field: 'template', message: 'required for type template' }]);
  const fields = { text: 'text', mediaUrl: 'media_url', caption: 'caption', filename: 'filename', mimetype: 'mimetype', replyTo: 'reply_to' } as const;
  const extra = (Object.keys(fields) as Array<keyof typeof fields>).find((k) => i[k] !== undefined);
  if (extra) {
    const field = fields[extra];
    throw invalid(`a template message has no ${field}: its text and media are the template's, with the parameters in template.components`, [{ field, message: 'not for type template' }]);
  }
  const components = i.template.components;
  if (components !== undefined && Buffer.byteLength(JSON.stringify(components)) > MAX_TEMPLATE_COMPONENTS_BYTES) {
    throw invalid(`template.components is larger than ${MAX_TEMPLATE_COMPONENTS_BYTES / 1024} KiB as JSON`, [{ field: 'template.components', message: 'too large' }]);
  }
}

const RANK: Record<string, number> = { sent: 1, delivered: 2, read: 3, played: 4 };

export type OutboundMessages = ReturnType<typeof makeOutboundMessages>;

export type OutboundMessagesDeps = {
  db: Database;
  broker: Broker;
  logger?: Logger;
  /**
   * WAHA_ALLOW_PRIVATE_URLS=false: a WAHA channel's media_url must name a public address. WAHA
   * fetches it itself, from inside our network, and sends the bytes to a chat the caller chooses.
   */
  wahaMediaMustBePublic?: boolean;
  resolve?: ResolveHost;
};

const mediaLookup = makeMediaLookup();

/** The host of a media_url that names, or resolves to, a link-local or cloud metadata address. */
async function linkLocalHost(mediaUrl: string, resolve: ResolveHost): Promise<string | undefined> {
  const url = parseUrl(mediaUrl);
  if (!url) return undefined; // not a URL at all: checkInput says so
  const host = url.hostname.replace(/^\[(.*)\]$/, '$1');
  if (isIP(host)) return isLinkLocalAddress(host) ? host : undefined;
  const answer = await resolve(host).catch(() => []);
  return answer.some((a) => isLinkLocalAddress(a.address)) ? host : undefined;
}

/** The template as stored and sent: the fields Meta takes, no others. */
function templateOf(t: OutboundTemplate): OutboundTemplate {
  return { name: t.name, language: t.language, ...(t.components !== undefined && { components: t.components }) };
}

export function makeOutboundMessages(deps: OutboundMessagesDeps) {
  const { db, broker } = deps;
  const log = deps.logger ?? silentLogger;

  /**
   * A WAHA channel's media_url: WAHA fetches it from inside our network. A link-local or cloud
   * metadata address (169.254.169.254…) is always refused, named or as a literal; with
   * WAHA_ALLOW_PRIVATE_URLS=false any loopback or private one is. A name that cannot be resolved
   * here is left to WAHA where private addresses are allowed (its resolver may know it).
   */
  async function checkMediaAddress(projectId: string, input: QueueMessageInput): Promise<void> {
    if (!input.mediaUrl) return;
    const channel = await withTransaction(db, (tx) => findChannel(tx, projectId, input.channelId), { projectId });
    if (channel?.type !== 'waha') return; // a missing channel is refused below, as before
    if (!deps.wahaMediaMustBePublic) {
      const host = await linkLocalHost(input.mediaUrl, deps.resolve ?? mediaLookup);
      if (!host) return;
      throw invalid(
        `media_url names ${host}, a link-local or cloud metadata address, which WAHA would fetch from inside this deployment's network; refused whatever WAHA_ALLOW_PRIVATE_URLS says`,
        [{ field: 'media_url', message: 'not a public address' }],
      );
    }
    try {
      await checkWebhookUrl(input.mediaUrl, { allowPrivate: false, ...(deps.resolve && { resolve: deps.resolve }) });
    } catch (err) {
      if (!(err instanceof WebhookUrlError)) throw err;
      if (err.problem !== 'private_address') throw invalid(err.message.replace(/^url /, 'media_url '), [{ field: 'media_url', message: err.problem }]);
      throw invalid(
        "media_url names a loopback or private address, which WAHA would fetch from inside this deployment's network (with WAHA_ALLOW_PRIVATE_URLS=false only public addresses are allowed)",
        [{ field: 'media_url', message: 'not a public address' }],
      );
    }
  }

  /** The contact a reply goes to: by id, or by phone (created, with contact.created, if new). */
  async function resolveContact(tx: Queryable, projectId: string, i: QueueMessageInput, events: EventEnvelope[]): Promise<string> {
    if (i.contactId !== undefined) {
      // Held until commit: a contact merged into another meanwhile (migration 023) would leave
      // this reply behind on the one merged away, and the sender would fail it as deleted.
      if (!(await lockContact(tx, projectId, i.contactId, 'share'))) throw await contactNotFound(tx, projectId, i.contactId);
      return i.contactId;
    }
    const phone = normalizePhone(i.phone!);
    if (!phone) throw invalid(`phone "${i.phone}" is not a valid phone number; use E.164, like +5511999990000`, [{ field: 'phone', message: 'not E.164' }]);
    const existing = await findContactIdByPhone(tx, projectId, phone);
    if (existing) return existing;
    const created = await insertContact(tx, {
      id: uuidv7(), projectId, name: null, phone, waId: waIdFromPhone(phone), email: null, tags: [], customFields: {}, source: 'api',
    });
    if (!created) return (await findContactIdByPhone(tx, projectId, phone))!;
    events.push(newEvent('contact.created', { projectId, aggregateId: created.id, data: contactData(created), occurredAt: created.createdAt }));
    return created.id;
  }

  /** Wakes senders for these messages. Best effort: the scheduler catches whatever this misses. */
  async function enqueue(items: ReadonlyArray<{ id: string; projectId: string }>): Promise<void> {
    if (items.length === 0) return;
    const msgs = items.map((x) => ({
      messageId: uuidv7(),
      body: Buffer.from(JSON.stringify({ message_id: x.id, project_id: x.projectId })),
      headers: { [PROJECT_HEADER]: x.projectId },
    }));
    await broker.send(Queues.messagesOutbound, msgs, { timeoutMs: 2000 });
  }

  return {
    enqueue,

    /** POST /messages: validates, stores the reply as queued, wakes a sender. */
    /**
     * `beforeCommit` runs in the transaction that stores the reply, with it (the route records its
     * Idempotency-Key answer there, so the reply and that answer commit together).
     */
    async queue(caller: Caller, input: QueueMessageInput, beforeCommit?: (tx: Queryable, m: MessageRecord) => Promise<void>): Promise<MessageRecord> {
      const projectId = caller.projectId;
      await checkMediaAddress(projectId, input);
      const message = await withTransaction(
        db,
        async (tx) => {
          const channel = await findChannel(tx, projectId, input.channelId);
          if (!channel) throw notFound('channel');
          // After the channel: another project's channel answers 404 whatever the body says.
          checkInput(input);
          if (!senderFor(channel.type)) throw new AppError('unprocessable', `sending through a ${channel.type} channel is not supported yet`);
          if (input.type === 'template' && channel.type !== 'whatsapp_cloud') {
            throw new AppError('unprocessable', 'template messages are a WhatsApp Cloud API feature; a WAHA channel sends free-form messages at any time', [{ field: 'type', message: 'not for this channel' }]);
          }
          const events: EventEnvelope[] = [];
          const contactId = await resolveContact(tx, projectId, input, events);
          let replyTo: string | null = null;
          if (input.replyTo !== undefined) {
            // Ours by id: a message of this conversation (a quote of another customer's message
            // would show it to this one). A provider's id we have stored must be of this
            // conversation too; one we do not know goes as given (sent before we were connected).
            replyTo = isUuid(input.replyTo) ? ((await externalIdOf(tx, projectId, channel.id, contactId, input.replyTo)) ?? null) : input.replyTo;
            if (replyTo === null) throw new AppError('unprocessable', 'reply_to names no message of this conversation (this contact through this channel) that has a provider id', [{ field: 'reply_to', message: 'unknown message' }]);
            // The key as the database derives it from every provider's ids (migration 006).
            const owner = isUuid(input.replyTo) ? contactId : await contactOfExternalKey(tx, channel.id, wahaMessageKey(replyTo));
            if (owner !== undefined && owner !== contactId) {
              throw new AppError('unprocessable', 'reply_to names a message of another conversation (another contact through this channel)', [{ field: 'reply_to', message: 'another conversation' }]);
            }
          }
          const isText = input.type === 'text';
          const template = input.type === 'template' ? input.template! : undefined;
          const m = await insertOutboundMessage(tx, {
            id: uuidv7(),
            projectId,
            channelId: channel.id,
            contactId,
            type: input.type,
            text: template ? null : isText ? input.text!.trim() : (input.caption ?? input.text ?? null),
            media: isText || template ? null : { url: input.mediaUrl!, mimetype: input.mimetype ?? null, filename: input.filename ?? null },
            replyToExternalId: replyTo,
            metadata: { source: 'api', sent_by: actorOf(caller).label, ...(template && { template: templateOf(template) }) },
          });
          await appendEvents(tx, events);
          await beforeCommit?.(tx, m);
          return m;
        },
        { projectId },
      );
      await enqueue([{ id: message.id, projectId }]).catch((err) => log.warn({ err, message_id: message.id }, 'could not wake a sender; the scheduler will'));
      return message;
    },

    /**
     * The provider accepted the message. Stores its id, counts it on the active session (opening
     * one if needed) and emits message.sent — unless the provider's echo got here first, in which
     * case the echo row (already counted) is folded into ours. Returns false if already recorded.
     */
    async recordSent(job: SendJob, externalId: string | null, timeoutMinutes: number): Promise<boolean> {
      const projectId = job.message.projectId;
      const done = await withTransaction(
        db,
        async (tx) => {
          // The row as it is now, not as it was taken: a contact merged while the reply was out
          // (migration 023) moved it to the contact it was merged into.
          const message = await lockQueued(tx, job.message.id);
          if (!message) return false;
          let at: Date;
          const events: EventEnvelope[] = [];
          const echo = externalId ? await lockEcho(tx, message.channelId, wahaMessageKey(externalId), message.id) : undefined;
          let sessionId: string | null;
          let status = 'sent';
          let steps: Parameters<typeof markSent>[1]['steps'];
          let error: Record<string, unknown> | null = null;
          let closedOn: string | undefined;
          if (echo) {
            at = await databaseClock(tx);
            await deleteMessage(tx, echo.id);
            sessionId = echo.sessionId;
            // A status only moves forward: an echo already failed (ack -1) keeps its failure.
            status = echo.status === 'failed' ? 'failed' : (RANK[echo.status] ?? 0) > RANK.sent ? echo.status : 'sent';
            steps = { sentAt: echo.sentAt ?? at, deliveredAt: echo.deliveredAt, readAt: echo.readAt, playedAt: echo.playedAt, failedAt: echo.failedAt };
            error = echo.error;
          } else {
            // As the inbound path does, and in its order: the phone's lock as a live message takes
            // it (an old message of this conversation being stored at this moment, which takes it
            // exclusively, is then placed before or after this reply, never merged with its
            // session), then the contact, then its sessions — a reply that took the session first
            // and the contact last deadlocked with a batch taking them the other way round. (One
            // case still crosses: an inbound batch that ends an overdue session between its rounds
            // holds that session before the next round's contacts; PostgreSQL then ends one of the
            // two, and it is retried.)
            await lockConversationPhone(tx, projectId, message.contactId);
            at = await touchContactForReply(tx, message.contactId);
            steps = { sentAt: at };
            const overdue = await endOverdueSession(tx, { contactId: message.contactId, channelId: message.channelId, at });
            if (overdue) events.push(sessionEndedEvent(overdue));
            // Reply, then resolve: the session it was written in, closed by a person since.
            closedOn = message.sessionId
              ? await countReplyOnClosedSession(tx, { messageId: message.id, sessionId: message.sessionId, contactId: message.contactId, channelId: message.channelId, at })
              : undefined;
            if (closedOn) sessionId = closedOn;
            else {
              const s = await touchActiveSession(tx, { newId: uuidv7(), projectId, contactId: message.contactId, channelId: message.channelId, at, fromMe: true, timeoutMinutes });
              sessionId = s.id;
              if (s.inserted) {
                const data = { session_id: s.id, contact_id: message.contactId, channel_id: message.channelId, started_at: s.startedAt.toISOString(), timeout_minutes: s.timeoutMinutes };
                events.push(newEvent('session.started', { projectId, aggregateId: s.id, occurredAt: s.startedAt, data }));
              }
            }
          }
          const sent = await markSent(tx, { id: message.id, externalId, sessionId, status, at, steps, reactions: echo?.reactions, reactionsAt: echo?.reactionsAt, revokedAt: echo?.revokedAt, error });
          // The ended session's customer wait, found again with this reply among its messages.
          if (closedOn) await settleLateSessions(tx, [closedOn]);
          events.push(newEvent('message.sent', { projectId, aggregateId: sent.id, occurredAt: at, data: messageData(sent) }));
          // The echo, folded into this reply, had already failed (WAHA's ack -1): this id, the one
          // subscribers keep, gets its message.failed too (the echo's own went out under the echo's id).
          if (status === 'failed') events.push(statusEvent({ id: sent.channelId, projectId }, sent, { status, previous: 'sent', at: steps.failedAt ?? at, error })!);
          await appendEvents(tx, events);
          return true;
        },
        { projectId },
      );
      return done;
    },

    /**
     * After a reply is sent or has failed for good: wakes the next reply of its conversation, which
     * waited behind it (replies of a conversation go out in order). When the wake-up is lost, the
     * scheduler wakes that reply once its hand-over is stale.
     */
    async wakeNext(job: SendJob): Promise<void> {
      const { id, projectId } = job.message;
      const next = await withTransaction(db, (tx) => nextQueuedInConversation(tx, { projectId, afterId: id }), { projectId });
      if (next) await enqueue([next]);
    },

    /** A failed attempt to be tried again after `delayMs`. */
    async recordRetry(job: SendJob, delayMs: number, error: SendFailure): Promise<void> {
      const doc = { ...error, attempt: job.attempt, retrying: true };
      await withTransaction(db, (tx) => scheduleRetry(tx, job.message.id, job.attempt, delayMs, doc), { projectId: job.message.projectId });
    },

    /** The message will never go: failed with the provider's reason, and message.failed. */
    async recordFailed(job: SendJob, error: SendFailure): Promise<boolean> {
      const projectId = job.message.projectId;
      return withTransaction(
        db,
        async (tx) => {
          const failed = await markFailed(tx, job.message.id, job.attempt, { ...error, attempts: job.attempt });
          if (!failed) return false;
          await appendEvents(tx, [statusEvent({ id: failed.channelId, projectId }, failed, { status: 'failed', previous: 'queued', at: new Date(), error })!]);
          return true;
        },
        { projectId },
      );
    },
  };
}
