// The sender: consumes messages.outbound (wake-ups naming a queued message), takes the message
// with a lease, sends it through its channel's provider and records the outcome:
//   accepted            → sent, provider id stored, message.sent
//   retryable failure   → tried again after the next REPLY_RETRY_DELAYS step (the schedule lives
//                         on the row: the scheduler wakes a sender when it is due)
//   final failure, or the last retry failed → failed with the provider's reason, message.failed
// A wake-up for a message that is not due, already done or held by another sender is dropped, and
// so is one for a reply queued after another of its conversation that is still queued: replies of a
// conversation go out in the order they were queued, and the sender done with one wakes the next.
//
// A project has at most half of a process's senders out at once: a provider that hangs holds
// those, and the other projects' replies still go (a wake-up past the share is put back a moment).
//
// At least once towards the provider: WAHA has no idempotency key, so a sender that dies between
// the provider's answer and the commit of its outcome leaves the message queued, and it is sent
// again when its lease expires. Recording the outcome is therefore retried in place first.
import type { Broker, Delivery, Handler } from '../broker/broker.ts';
import { consumerComponent, startConsumer } from '../broker/consumer-runner.ts';
import { Queues } from '../broker/topology.ts';
import type { Database } from '../db/database.ts';
import { claimForSend, deferSend, type SendJob } from '../db/outbound.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { isUuid } from '../domain/ids.ts';
import type { ChannelDirectory } from '../inbound/channel-directory.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { codeLabel, outboundSendDuration, outboundSendsTotal } from '../observability/metrics.ts';
import { makeOutboundMessages, type OutboundMessages, type SendFailure } from '../services/outbound-messages.service.ts';
import { withoutSecrets, type OutboundContent, type OutboundTemplate, type OutboundType, type SendOutcome } from './sender.ts';
import { senderFor } from './senders.ts';
import type { ProviderDispatchers } from './provider-dispatchers.ts';
import type { Component } from '../deadline.ts';

export const SENDER_NAME = 'message-sender';

export type SenderOptions = {
  db: Database;
  broker: Broker;
  channels: ChannelDirectory;
  logger?: Logger;
  /** Delays between attempts (REPLY_RETRY_DELAYS); attempts = delays + 1. */
  retryDelaysMs: readonly number[];
  /** How long a sender holds a message while the provider answers (longer than its timeout). */
  leaseMs?: number;
  concurrency?: number;
  /**
   * Replies of one project in flight at once in this process (default half of `concurrency`): a
   * project whose provider hangs (15 s a try) holds only these, not every sender, and the other
   * projects' replies still go. A wake-up past it is put back a moment, no attempt spent.
   */
  projectConcurrency?: number;
  /** Called with the delay of each scheduled retry, so the scheduler can wake for it. */
  onRetryScheduled?: (delayMs: number) => void;
  /** Where each provider's calls may connect (provider-dispatchers.ts); any address when absent. */
  dispatchers?: ProviderDispatchers;
};

function contentOf(job: SendJob): OutboundContent {
  const m = job.message;
  const media = m.media?.url ? { url: m.media.url, mimetype: m.media.mimetype, filename: m.media.filename } : null;
  // A template message keeps its template where the API shows it: metadata.template.
  const template = m.type === 'template' ? ((m.metadata.template as OutboundTemplate | undefined) ?? null) : null;
  return { type: m.type as OutboundType, text: m.text, media, replyToExternalId: m.replyToExternalId, template };
}

const pause = (ms: number) => new Promise((r) => setTimeout(r, ms));

const PERSIST_DELAYS_MS = [50, 200, 750, 1500, 2500];
/** Attempts beyond the retry schedule a reply may be taken without an outcome before it is given up. */
const NO_OUTCOME_EXTRA_ATTEMPTS = 2;
/** The longest a provider's Retry-After holds a reply (and the replies of its conversation after it). */
export const MAX_RETRY_AFTER_MS = 15 * 60_000;
const DEFAULT_CONCURRENCY = 16;
/** A reply whose project has its share of senders out comes back after about this long. */
const PROJECT_BUSY_BACKOFF_MS = 1000;
/** How long before its lease ends a sender stops trying to record a send the provider accepted. */
const LEASE_MARGIN_MS = 5000;

/**
 * Retries `fn` (about 5 s in all, or until `until` when that is later): a lost race or a database
 * blip should not resend. Recording a send the provider accepted is retried until shortly before
 * the lease ends: giving up sooner leaves the message queued, and once the lease is over it is
 * sent again — a second copy to the customer for a database failover of ten seconds.
 */
async function persist<T>(fn: () => Promise<T>, until = 0): Promise<T> {
  for (let i = 0; ; i++) {
    try {
      return await fn();
    } catch (err) {
      const delay = PERSIST_DELAYS_MS[Math.min(i, PERSIST_DELAYS_MS.length - 1)];
      if (i >= PERSIST_DELAYS_MS.length && Date.now() + delay > until) throw err;
      await pause(delay);
    }
  }
}

export function makeSendHandler(opts: SenderOptions, outbound: OutboundMessages = makeOutboundMessages(opts)): Handler {
  const log = (opts.logger ?? silentLogger).child({ component: SENDER_NAME });
  const leaseMs = opts.leaseMs ?? 60_000;
  const projectCap = opts.projectConcurrency ?? Math.max(1, Math.floor((opts.concurrency ?? DEFAULT_CONCURRENCY) / 2));
  /** Replies each project has in flight in this process. */
  const inFlight = new Map<string, number>();

  /** The next reply of the conversation waited behind this one; a lost wake-up is the scheduler's. */
  const wakeNext = (job: SendJob) =>
    outbound.wakeNext(job).catch((err) => log.warn({ err, message_id: job.message.id }, 'could not wake the next reply of the conversation; the scheduler will'));

  return async (d: Delivery) => {
    let wake: { message_id?: unknown; project_id?: unknown };
    try {
      wake = JSON.parse(d.body.toString('utf8'));
    } catch {
      log.warn({ message_id: d.messageId }, 'malformed sender wake-up dropped');
      return;
    }
    if (!isUuid(wake.message_id) || !isUuid(wake.project_id)) return;
    const projectId = wake.project_id;
    const messageId = wake.message_id;
    const held = inFlight.get(projectId) ?? 0;
    if (held >= projectCap) {
      // Its project has its share of the senders out (a provider that hangs, a burst): the reply
      // comes due again in a moment, with no attempt spent (its conversation's later replies
      // still wait behind it).
      const ms = Math.round(PROJECT_BUSY_BACKOFF_MS * (0.8 + 0.4 * Math.random()));
      if (await withTransaction(opts.db, (tx) => deferSend(tx, projectId, messageId, ms), { projectId })) opts.onRetryScheduled?.(ms);
      return;
    }
    inFlight.set(projectId, held + 1);
    try {
      await send(projectId, messageId);
    } finally {
      const left = (inFlight.get(projectId) ?? 1) - 1;
      if (left > 0) inFlight.set(projectId, left);
      else inFlight.delete(projectId);
    }
  };

  async function send(projectId: string, messageId: string): Promise<void> {
    const claimedAt = Date.now();
    const job = await withTransaction(opts.db, (tx) => claimForSend(tx, projectId, messageId, leaseMs), { projectId });
    if (!job) return;

    const ctx = { message_id: job.message.id, attempt: job.attempt };
    let channel: Awaited<ReturnType<ChannelDirectory['get']>>;
    let outcome: SendOutcome;
    try {
      channel = await opts.channels.get(job.message.channelId);
      const sender = channel ? senderFor(channel.type) : undefined;
      if (!channel) outcome = { ok: false, retry: false, error: 'the channel no longer exists', code: 'channel_deleted' };
      // Deleted while the message waited (queued or between retries): nothing more goes to them.
      else if (job.contactDeleted) outcome = { ok: false, retry: false, error: 'the contact was deleted before the message could be sent', code: 'contact_deleted' };
      else if (!sender) outcome = { ok: false, retry: false, error: `sending through a ${channel.type} channel is not supported`, code: 'unsupported' };
      // Taken again and again without an outcome (each sender that took it stopped or hung: its
      // lease ran out): given up rather than tried for ever, which would also hold every reply of
      // the conversation queued after it. It may have gone out on one of those tries.
      else if (job.attempt > opts.retryDelaysMs.length + 1 + NO_OUTCOME_EXTRA_ATTEMPTS) {
        outcome = { ok: false, retry: false, error: `no outcome after ${job.attempt - 1} attempts: each sender that took it stopped before recording one`, code: 'no_outcome' };
      } else {
        const started = performance.now();
        outcome = await sender.send(channel, { phone: job.phone, waLid: job.waLid }, contentOf(job), opts.dispatchers?.[channel.type]);
        outboundSendDuration.observe({ provider: channel.type }, (performance.now() - started) / 1000);
      }
    } catch (err) {
      // Our own failure, an exception rather than an outcome (the channel's credentials no longer
      // decrypt, a read failed; the provider senders return their failures as outcomes): tried
      // again on the schedule and then failed, like a provider's failure — a reply left without an
      // outcome would hold the replies queued after it.
      log.error({ ...ctx, err }, 'could not prepare the message for sending');
      channel = undefined;
      outcome = { ok: false, retry: true, error: 'the message could not be prepared for sending (the server log has the reason)', code: 'internal_error' };
    }

    if (!outcome.ok && channel) {
      const clean = (t: string | null | undefined) => (t ? withoutSecrets(t, channel!.secrets) : null);
      outcome = { ...outcome, error: withoutSecrets(outcome.error, channel.secrets), title: clean(outcome.title), details: clean(outcome.details) };
    }
    const count = (result: 'sent' | 'retrying' | 'failed', code: string | null) =>
      outboundSendsTotal.inc({ provider: channel?.type ?? 'unknown', result, code: codeLabel(code) });
    if (outcome.ok) {
      count('sent', null);
      if (!outcome.externalId) log.warn(ctx, 'the provider accepted the message without returning its id; its echo cannot be recognised');
      await persist(() => outbound.recordSent(job, outcome.externalId, channel!.sessionTimeoutMinutes), claimedAt + leaseMs - LEASE_MARGIN_MS);
      await wakeNext(job);
      return;
    }
    const delay = outcome.retry ? opts.retryDelaysMs[job.attempt - 1] : undefined;
    if (delay !== undefined) {
      // A provider's Retry-After is honoured up to a cap: the replies queued after this one wait too.
      const wait = Math.max(delay, Math.min(outcome.retryAfterMs ?? 0, MAX_RETRY_AFTER_MS));
      count('retrying', outcome.code);
      log.info({ ...ctx, error: outcome.error, retry_in_ms: wait }, 'send failed; will retry');
      await persist(() => outbound.recordRetry(job, wait, failureOf(outcome)));
      opts.onRetryScheduled?.(wait);
      return;
    }
    count('failed', outcome.code);
    log.warn({ ...ctx, error: outcome.error, code: outcome.code }, 'send failed for good');
    await persist(() => outbound.recordFailed(job, failureOf(outcome)));
    await wakeNext(job);
  }
}

export async function startSender(opts: SenderOptions): Promise<Component> {
  const logger = opts.logger ?? silentLogger;
  const consumer = await startConsumer(
    opts.broker,
    // The broker's own retries are for our bugs only: provider failures are scheduled on the row.
    { name: SENDER_NAME, queue: Queues.messagesOutbound, concurrency: opts.concurrency ?? DEFAULT_CONCURRENCY, handle: makeSendHandler(opts) },
    logger,
  );
  return consumerComponent(SENDER_NAME, consumer);
}

/** What is stored of a failed attempt: the provider's words, code, title and details. */
function failureOf(o: Extract<SendOutcome, { ok: false }>): SendFailure {
  return { message: o.error, code: o.code, title: o.title ?? null, details: o.details ?? null };
}
