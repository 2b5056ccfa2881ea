// The inbound transaction: normalised provider events → contacts, sessions, messages and their
// outbox rows, all committed together. Provider-agnostic: it sees InboundEvents and a channel.
//
// New messages go to the database in one call for the whole batch (inbound_store_messages(),
// migration 006: per message, dedupe first — a duplicate changes nothing, not even counters —
// then the contact and the active session upserted on their unique indexes, the message, the
// counters). Losing the message insert to a concurrent copy of the same message rolls the
// transaction back (DuplicateRace); the retry then reads it as a duplicate. Acks, reactions, edits,
// revokes and session states follow, one statement or two each; then the events of the whole
// batch are appended in one statement. A conversation whose active session fell due before its
// message (the sweeper had not got to it) has that session ended first, so the message opens a new one.
// A late message is counted in the session of its own time (migration 015); a session opened as
// already over for late messages gets its session.ended once the whole batch is counted in it.
// Several webhooks share the transaction (the processor batches them). Messages are stored in
// contact order so that concurrent batches take row locks in the same order and do not deadlock.
import type { Database, Queryable } from '../db/database.ts';
import { withTransaction } from '../db/transaction.ts';
import { DUPLICATE_RACE, storeInboundMessages, type InboundMessageRow, type StoredOutcome } from '../db/inbound-messages.sql.ts';
import { endOverdueSession, settleLateSessions, type EndedSession } from '../db/session-lifecycle.sql.ts';
import { mergeLidContact, type ContactMerge } from '../db/contact-merge.sql.ts';
import { sessionEndedEvent } from './session-lifecycle.service.ts';
import { backdateStep, lockChangeTarget, lockMessageByKey, setMessageStatus, writeEdit, writeReactions, writeRevoke, type ChangeTarget } from '../db/messages.sql.ts';
import { setChannelStatus, type ChannelType } from '../db/channels.sql.ts';
import { newEvent, type EventEnvelope, type MessageStatus as EventStatus } from '../domain/events.ts';
import { uuidv7 } from '../domain/ids.ts';
import { failureView, isForward, type Ignored, type InboundEvent, type InboundEdit, type InboundMessage, type InboundReaction, type InboundRevoke, type InboundStatus } from '../domain/inbound.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';
import { eventLabel, inboundEventsTotal } from '../observability/metrics.ts';
import {
  adDoc, contactCardDoc, contactData, eventAd, initialStatus, locationDoc, machineStatus, mediaDoc, messageData, stepTimes,
  type StoredMessage,
} from '../inbound/payloads.ts';

export type InboundChannel = { id: string; projectId: string; name: string; type: ChannelType; sessionTimeoutMinutes: number };

/** The events of one webhook, from one channel. */
export type InboundItem = { channel: InboundChannel; events: readonly InboundEvent[]; receivedAt: Date };

/** What one item came to: done, or worth another try later (a reference to a message not stored yet). */
export type ItemOutcome = { retry?: string };

type Result =
  | 'stored' | 'duplicate' | 'updated' | 'unchanged' | 'ignored' | 'missing_target'
  | Ignored['reason'];

/** Another transaction committed the same message between our dedupe and our insert. */
export class DuplicateRace extends Error {
  constructor(detail: string) {
    super(`${detail}; the transaction is rolled back and retried`);
    this.name = 'DuplicateRace';
  }
}

const KIND_ORDER: Record<InboundEvent['kind'], number> = {
  message: 0, status: 1, reaction: 1, edit: 1, revoke: 1, channel_status: 2, ignored: 3,
};

/**
 * What a batch's events are sorted by within their kind, so that concurrent batches take row locks
 * in one order: a message's contact, the message an ack, a reaction, an edit or a revoke locks (in
 * arrival order, two batches acking the same two messages the other way round deadlocked).
 */
function lockKey(e: InboundEvent): string {
  switch (e.kind) {
    case 'message':
      return e.contact.phone ?? e.contact.lid ?? '';
    case 'status':
      return e.messageKey;
    case 'reaction':
    case 'edit':
    case 'revoke':
      return e.targetKey;
    default:
      return '';
  }
}

/**
 * How far ahead of its arrival a provider's timestamp may be and still be believed: clocks differ
 * by seconds, not minutes. A message dated hours ahead (a phone with a wrong clock, a buggy
 * bridge) would end the active session early and open one that stays open until that hour, since
 * a session's activity only moves forward; it is taken as sent when it arrived instead.
 */
export const MAX_CLOCK_AHEAD_MS = 5 * 60_000;

/** The event, dated at its arrival when its own date is further ahead than MAX_CLOCK_AHEAD_MS. */
export function notAhead<E extends InboundEvent>(e: E, receivedAt: Date): E {
  const at = 'timestamp' in e ? e.timestamp : undefined;
  return at instanceof Date && at.getTime() - receivedAt.getTime() > MAX_CLOCK_AHEAD_MS ? { ...e, timestamp: receivedAt } : e;
}

export function makeInboundService(deps: { db: Database }) {
  /** Applies the items in one tenant transaction (all of one project). Throws when it rolls back. */
  async function apply(projectId: string, items: readonly InboundItem[]): Promise<ItemOutcome[]> {
    const work = items
      .flatMap((item, i) => item.events.map((event, n) => ({ item: i, n, event: notAhead(event, item.receivedAt) })))
      .sort((a, b) => KIND_ORDER[a.event.kind] - KIND_ORDER[b.event.kind] || compare(lockKey(a.event), lockKey(b.event)) || a.item - b.item || a.n - b.n);

    const messages = work.filter((w) => w.event.kind === 'message');
    const others = work.filter((w) => w.event.kind !== 'message');
    const prepared = messages.map((w) => prepareMessage(items[w.item].channel, w.event as InboundMessage));
    // Webhooks with nothing to store (Status posts, groups, another number's changes…) are only
    // counted: no transaction for them.
    const store = () => withTransaction(
      deps.db,
      async (tx) => {
        const out: EventEnvelope[] = [];
        const res: Array<{ item: number; event: InboundEvent; result: Result }> = [];
        // A session that fell due while the batch was stored is ended between two rounds: its
        // session.ended follows the events of the messages stored before (its own among them) and
        // precedes those of the messages that went again.
        const endedAfterRound: EventEnvelope[][] = [];
        const { outcomes: stored, rounds } = await storeMessages(tx, projectId, prepared, (ended, round) => {
          (endedAfterRound[round] ??= []).push(sessionEndedEvent(ended));
        }, (merge, round) => {
          // The sessions one of the two had to end, then the merge itself.
          (endedAfterRound[round] ??= []).push(
            ...merge.ended.map(sessionEndedEvent),
            newEvent('contact.merged', { projectId, aggregateId: merge.into.id, data: { ...contactData(merge.into), merged_contact_id: merge.mergedId } }),
          );
        });
        const late = new Set<string>();
        const openedLate = new Set<string>();
        const earliest = new Map<string, Date>(); // each session's start after the batch
        const inRoundOrder = stored.map((_, i) => i).sort((a, b) => rounds[a] - rounds[b] || a - b);
        const failedOnArrival: Prepared[] = [];
        let flushed = 0; // rounds whose session.ended events are out
        const flushEnded = (upTo: number) => {
          for (; flushed < upTo; flushed++) out.push(...(endedAfterRound[flushed] ?? []));
        };
        for (const i of inRoundOrder) {
          const outcome = stored[i];
          const w = messages[i];
          flushEnded(rounds[i]);
          if (outcome.outcome === 'stored') {
            const { id, startedAt } = outcome.session;
            if (!(earliest.get(id)! <= startedAt)) earliest.set(id, startedAt);
            if (outcome.session.ended) late.add(outcome.session.id);
            if (outcome.session.ended && outcome.session.inserted) openedLate.add(outcome.session.id);
            messageEvents(items[w.item].channel, w.event as InboundMessage, prepared[i], outcome, out);
            // One of ours the provider already reports as failed (WAHA ack -1): when, as any failure.
            if (prepared[i].row.status === 'failed') failedOnArrival.push(prepared[i]);
          }
        }
        for (const p of failedOnArrival) await setMessageStatus(tx, p.stored.id, 'failed', p.row.timestamp, null);
        flushEnded(endedAfterRound.length);
        stored.forEach((outcome, i) => res.push({ item: messages[i].item, event: messages[i].event, result: outcome.outcome }));
        // A session opened by this batch starts at its earliest message, which may have come after
        // the one that opened it: its session.started says so.
        out.forEach((e, i) => {
          const start = e.type === 'session.started' ? earliest.get(e.aggregate_id) : undefined;
          const data = e.data as { started_at: string; contact_id: string; channel_id: string; timeout_minutes: number };
          if (start && start.toISOString() !== data.started_at) {
            out[i] = sessionStartedEvent(projectId, { id: e.aggregate_id, contactId: data.contact_id, channelId: data.channel_id, startedAt: start, timeoutMinutes: data.timeout_minutes });
          }
        });
        // Late messages counted in sessions already over: those opened for them end now, with the
        // whole batch counted; those that held them send nothing again.
        if (late.size) {
          for (const ended of await settleLateSessions(tx, [...late])) {
            if (!openedLate.has(ended.id)) continue;
            out.push(sessionEndedEvent(ended));
          }
        }
        for (const w of others) {
          const { channel, receivedAt } = items[w.item];
          res.push({ item: w.item, event: w.event, result: await applyEvent(tx, channel, w.event, receivedAt, out) });
        }
        await appendEvents(tx, out);
        return res;
      },
      { projectId },
    );
    const results = work.every((w) => w.event.kind === 'ignored')
      ? work.map((w) => ({ item: w.item, event: w.event, result: (w.event as Ignored).reason }))
      : await store();

    const outcomes: ItemOutcome[] = items.map(() => ({}));
    for (const r of results) {
      inboundEventsTotal.inc({ provider: r.event.provider, event: eventLabel(r.event.event), result: r.result });
      if (r.result === 'missing_target') outcomes[r.item].retry = `${r.event.kind} refers to a message this channel does not have (yet)`;
    }
    return outcomes;
  }

  return { apply };
}

export type InboundService = ReturnType<typeof makeInboundService>;

const compare = (a: string, b: string) => (a < b ? -1 : a > b ? 1 : 0);

async function applyEvent(
  tx: Queryable,
  ch: InboundChannel,
  e: InboundEvent,
  receivedAt: Date,
  out: EventEnvelope[],
): Promise<Result> {
  switch (e.kind) {
    case 'message':
      throw new Error('new messages are stored in one batch, not here');
    case 'status':
      return applyStatus(tx, ch, e, receivedAt, out);
    case 'reaction':
      return applyReaction(tx, ch, e, receivedAt, out);
    case 'edit':
      return applyEdit(tx, ch, e, receivedAt, out);
    case 'revoke':
      return applyRevoke(tx, ch, e, receivedAt, out);
    case 'channel_status': {
      const at = e.timestamp ?? receivedAt;
      const changed = await setChannelStatus(tx, ch.id, e.status, at, { providerTime: at });
      if (!changed) return 'unchanged';
      out.push(newEvent('channel.status_changed', {
        projectId: ch.projectId,
        aggregateId: ch.id,
        occurredAt: at,
        data: { channel_id: ch.id, name: changed.name, type: changed.type, status: e.status, previous_status: changed.previous, reason: e.providerStatus },
      }));
      return 'updated';
    }
    case 'ignored':
      return e.reason;
  }
}

type Prepared = { row: InboundMessageRow; stored: StoredMessage };
type Stored = Exclude<StoredOutcome, { outcome: 'overdue' | 'lid_merge' }>;

/**
 * Stores the batch's messages. Those of a conversation whose session is over by its due time come
 * back untouched: that session is ended (as the sweeper would have) and they go again, now opening
 * a new session. A later message of the same batch can find the new session over too, hence a loop.
 * So do those that show a LID-only contact to be the person of a phone that has a contact of its
 * own, and the messages after it: the two are merged (migration 023) and they go again.
 */
async function storeMessages(
  tx: Queryable,
  projectId: string,
  prepared: Prepared[],
  onEnded: (s: EndedSession, round: number) => void,
  onMerged: (m: ContactMerge, round: number) => void,
): Promise<{ outcomes: Stored[]; rounds: number[] }> {
  const outcomes: Stored[] = new Array(prepared.length);
  /** The round in which each message was stored (or found a duplicate). */
  const rounds: number[] = new Array(prepared.length).fill(0);
  let pending = prepared.map((_, i) => i);
  for (let round = 0; pending.length > 0; round++) {
    // Every round stores a message, ends an overdue session or merges two contacts (or puts a
    // merge off behind an overdue session it ends): at most four rounds a message.
    if (round > 4 * prepared.length) throw new Error('the batch keeps needing another round (sessions falling due, contacts to merge)');
    const results = await storeInboundMessages(tx, projectId, pending.map((i) => prepared[i].row)).catch((err) => {
      throw err?.code === DUPLICATE_RACE ? new DuplicateRace(String(err.message)) : err;
    });
    const again: number[] = [];
    const overdue = new Map<string, { contactId: string; channelId: string; at: Date }>();
    /** The function stops at the first merge it asks for: one a round at most. */
    let merge: { fromId: string; phone: string; lid: string } | undefined;
    results.forEach((o, k) => {
      const i = pending[k];
      if (o.outcome === 'lid_merge') {
        again.push(i);
        const { phone, lid } = prepared[i].row;
        merge = { fromId: o.contactId, phone: phone!, lid: lid! };
        return;
      }
      if (o.outcome !== 'overdue') {
        outcomes[i] = o;
        rounds[i] = round;
        return;
      }
      again.push(i);
      const { channelId, timestamp } = prepared[i].row;
      const key = `${o.contactId}/${channelId}`;
      const seen = overdue.get(key);
      if (!seen || timestamp < seen.at) overdue.set(key, { contactId: o.contactId, channelId, at: timestamp });
    });
    // The function stops at a merge: the messages after it come back without a result.
    for (let k = results.length; k < pending.length; k++) again.push(pending[k]);
    for (const o of overdue.values()) {
      const ended = await endOverdueSession(tx, o);
      if (ended) onEnded(ended, round);
    }
    // A merge locks the phone's contact. Messages before it in this round that found their
    // session overdue have not locked their contacts yet (they are stored next round, after the
    // merge would be): the merge waits a round, so contacts are still locked in the batch's order.
    if (merge && overdue.size === 0) {
      const merged = await mergeLidContact(tx, { projectId, ...merge });
      if (merged) onMerged(merged, round);
    }
    pending = again;
  }
  return { outcomes, rounds };
}

/** A message as the database function takes it, with the ids of the rows it may create. */
function prepareMessage(ch: InboundChannel, m: InboundMessage): Prepared {
  const ad = adDoc(m.ad) ?? null;
  const status = initialStatus(m);
  const stored: StoredMessage = {
    id: uuidv7(),
    contactId: '',
    sessionId: '',
    channelId: ch.id,
    status,
    media: mediaDoc(m),
    location: locationDoc(m),
    contactCard: contactCardDoc(m),
  };
  const steps = m.fromMe ? stepTimes(status, m.timestamp) : { sentAt: null, deliveredAt: null, readAt: null, playedAt: null };
  return {
    stored,
    row: {
      channelId: ch.id,
      externalKey: m.messageKey,
      externalId: m.externalId,
      messageId: stored.id,
      newContactId: uuidv7(),
      newSessionId: uuidv7(),
      phone: m.contact.phone,
      waId: m.contact.waId,
      lid: m.contact.lid,
      pushName: m.pushName,
      source: ad ? 'ctwa_ad' : 'whatsapp',
      adAttribution: ad,
      timestamp: m.timestamp,
      fromMe: m.fromMe,
      timeoutMinutes: ch.sessionTimeoutMinutes,
      type: m.type,
      text: m.text ?? null,
      media: stored.media,
      location: stored.location,
      contactCard: stored.contactCard,
      status,
      ...steps,
      replyToExternalId: m.replyToExternalId ?? null,
      metadata: { ...m.metadata, ...(m.source ? { source: m.source } : {}), ...(m.pushName ? { push_name: m.pushName } : {}) },
    },
  };
}

function sessionStartedEvent(projectId: string, s: { id: string; contactId: string; channelId: string; startedAt: Date; timeoutMinutes: number }): EventEnvelope {
  return newEvent('session.started', {
    projectId,
    aggregateId: s.id,
    occurredAt: s.startedAt,
    data: { session_id: s.id, contact_id: s.contactId, channel_id: s.channelId, started_at: s.startedAt.toISOString(), timeout_minutes: s.timeoutMinutes },
  });
}

/** contact.created/updated, session.started, message.received or message.sent, tracking.ad_click. */
function messageEvents(ch: InboundChannel, m: InboundMessage, p: Prepared, s: Extract<Stored, { outcome: 'stored' }>, out: EventEnvelope[]): void {
  const projectId = ch.projectId;
  const stored: StoredMessage = { ...p.stored, contactId: s.contactId, sessionId: s.session.id };
  if (s.contactInserted && s.contact) out.push(newEvent('contact.created', { projectId, aggregateId: s.contactId, data: contactData(s.contact) }));
  else if (s.contactChanges.length && s.contact) {
    out.push(newEvent('contact.updated', { projectId, aggregateId: s.contactId, data: { ...contactData(s.contact), changed_fields: s.contactChanges } }));
  }
  if (s.session.inserted) out.push(sessionStartedEvent(projectId, { ...s.session, contactId: s.contactId, channelId: ch.id }));
  const data = messageData(m, stored);
  out.push(newEvent(m.fromMe ? 'message.sent' : 'message.received', { projectId, aggregateId: stored.id, occurredAt: m.timestamp, data }));
  if (m.fromMe && stored.status === 'failed') {
    // Sent from the phone and already failed when we first hear of it: subscribers learn the
    // failure as they would from a later ack -1 (the provider gives no reason on the message).
    const target = { id: stored.id, contactId: stored.contactId, sessionId: stored.sessionId, externalId: m.externalId };
    out.push(statusEvent(ch, target, { status: 'failed', previous: 'sent', at: m.timestamp, error: undefined })!);
  }
  const ad = p.row.adAttribution;
  if (ad) {
    out.push(newEvent('tracking.ad_click', {
      projectId,
      aggregateId: s.contactId,
      occurredAt: m.timestamp,
      data: { ...eventAd(ad), contact_id: s.contactId, message_id: stored.id, session_id: s.session.id, channel_id: ch.id, clicked_at: m.timestamp.toISOString() },
    }));
  }
}

const STATUS_EVENTS = { delivered: 'message.delivered', read: 'message.read', played: 'message.played' } as const;

async function applyStatus(tx: Queryable, ch: InboundChannel, s: InboundStatus, receivedAt: Date, out: EventEnvelope[]): Promise<Result> {
  // An ack of a message the contact sent us says we read it: not a delivery status we track.
  if (s.fromMe === false) return 'ignored';
  const msg = await lockMessageByKey(tx, ch.id, s.messageKey);
  if (!msg) return s.ownChatIfMissing ? 'own_chat' : 'missing_target';
  if (msg.direction !== 'outbound') return 'ignored';
  const at = s.timestamp ?? receivedAt;
  if (!isForward(machineStatus(msg.status), s.status)) {
    // A step reported after a later one (delivered after read: neither provider orders them) moves
    // nothing forward, but says when that step happened: the time the later one filled in for it
    // goes back to it. No event: its moment has passed. A failed message's times stay as they are.
    const step = s.status === 'sent' || s.status === 'delivered' || s.status === 'read' ? s.status : undefined;
    if (s.timestamp && step && step !== msg.status && msg.status !== 'failed') await backdateStep(tx, msg.id, step, s.timestamp);
    return 'unchanged';
  }

  const error = s.error ? { ...s.error } : null;
  await setMessageStatus(tx, msg.id, s.status, at, error);
  const event = statusEvent(ch, msg, { status: s.status, previous: msg.status, at, error: s.error });
  if (event) out.push(event);
  return 'updated';
}

/** The fields every event of a reaction, an edit or a deletion carries. */
function changeData(ch: Pick<InboundChannel, 'id'>, m: ChangeTarget) {
  return { message_id: m.id, contact_id: m.contactId, session_id: m.sessionId, channel_id: ch.id, external_id: m.externalId, direction: m.direction, from_me: m.fromMe };
}

/**
 * One party's reaction (or its removal) on its target. A one-to-one chat has two parties, so the
 * reaction is ours or the contact's whichever id (phone or LID) the provider named them by. One
 * older than that party's reaction applied changes nothing (deliveries come out of order); the
 * event goes out only when the emoji changed (a retried delivery changes nothing).
 */
async function applyReaction(tx: Queryable, ch: InboundChannel, e: InboundReaction, receivedAt: Date, out: EventEnvelope[]): Promise<Result> {
  const m = await lockChangeTarget(tx, ch.id, e.targetKey);
  if (!m) return 'missing_target';
  const by = e.fromMe ? 'me' : 'contact';
  const at = e.timestamp ?? receivedAt;
  const applied = m.reactionsAt[by];
  if (applied && applied > at) return 'unchanged';
  const previous = m.reactions[by] ?? null;
  const emoji = e.emoji === '' ? null : e.emoji;
  const reactions = { ...m.reactions };
  if (emoji === null) delete reactions[by];
  else reactions[by] = emoji;
  await writeReactions(tx, m.id, reactions, { ...m.reactionsAt, [by]: at });
  if (previous === emoji) return 'unchanged';
  out.push(newEvent('message.reacted', {
    projectId: ch.projectId,
    aggregateId: m.id,
    occurredAt: at,
    data: { ...changeData(ch, m), by, emoji, previous_emoji: previous, reacted_at: at.toISOString() },
  }));
  return 'updated';
}

/** The newest edit wins (edits can arrive out of order); the first text stays in metadata.original_text. */
async function applyEdit(tx: Queryable, ch: InboundChannel, e: InboundEdit, receivedAt: Date, out: EventEnvelope[]): Promise<Result> {
  const m = await lockChangeTarget(tx, ch.id, e.targetKey);
  if (!m) return 'missing_target';
  const at = e.timestamp ?? receivedAt;
  if (m.editedAt && m.editedAt > at) return 'unchanged';
  if (m.editedAt && m.editedAt.getTime() === at.getTime() && m.text === e.text) return 'unchanged'; // delivered again
  await writeEdit(tx, m.id, e.text, at);
  out.push(newEvent('message.edited', {
    projectId: ch.projectId,
    aggregateId: m.id,
    occurredAt: at,
    data: { ...changeData(ch, m), text: e.text, previous_text: m.text, edited_at: at.toISOString() },
  }));
  return 'updated';
}

/** The first deletion is the one recorded; another (a retry, the other form of the same id) changes nothing. */
async function applyRevoke(tx: Queryable, ch: InboundChannel, e: InboundRevoke, receivedAt: Date, out: EventEnvelope[]): Promise<Result> {
  const m = await lockChangeTarget(tx, ch.id, e.targetKey);
  if (!m) return 'missing_target';
  if (m.revokedAt) return 'unchanged';
  const at = e.timestamp ?? receivedAt;
  await writeRevoke(tx, m.id, at);
  out.push(newEvent('message.revoked', { projectId: ch.projectId, aggregateId: m.id, occurredAt: at, data: { ...changeData(ch, m), revoked_at: at.toISOString() } }));
  return 'updated';
}

/**
 * The event of a message's new status (message.delivered/read/played/failed), whether an ack
 * moved it there or the message arrived in it; none for a status without an event.
 */
export function statusEvent(
  ch: Pick<InboundChannel, 'id' | 'projectId'>,
  msg: { id: string; contactId: string; sessionId: string | null; externalId: string | null },
  change: { status: string; previous: string; at: Date; error: unknown },
): EventEnvelope | undefined {
  const data = {
    message_id: msg.id,
    contact_id: msg.contactId,
    session_id: msg.sessionId,
    channel_id: ch.id,
    external_id: msg.externalId,
    status: change.status as EventStatus,
    previous_status: change.previous as EventStatus,
    at: change.at.toISOString(),
  };
  const base = { projectId: ch.projectId, aggregateId: msg.id, occurredAt: change.at };
  if (change.status === 'failed') {
    const failure = failureView(change.error);
    return newEvent('message.failed', { ...base, data: { ...data, error: failure.message, error_code: failure.code } });
  }
  return change.status in STATUS_EVENTS ? newEvent(STATUS_EVENTS[change.status as keyof typeof STATUS_EVENTS], { ...base, data }) : undefined;
}
