// Consuming on RabbitMQ: the work-queue consumer (ack, retry through a wait queue, or dead-letter
// into the database) and the drainer that moves messages which crashed their consumer too often
// from Q.dlq into the same dead_letters table.
import type { Channel, ChannelModel, ConsumeMessage } from 'amqplib';
import type { Database } from '../db/database.ts';
import { isDatabaseUnavailable } from '../db/unavailable.ts';
import type { Logger } from '../observability/logger.ts';
import { OUTAGE_LIMIT_MS, errorText, outageDelay, retryDelayAfter, type DeadLetterBody, type Delivery, type Handler, type Headers } from './broker.ts';
// The original routing key rides in this header through retry hops and replays (sent to a queue
// by name, a message would otherwise carry the queue name as its key).
import { ROUTING_KEY_HEADER, insertDeadLetter } from './dead-letters.sql.ts';
import type { OutgoingFrame, RabbitLink } from './rabbitmq-connection.ts';
import { ATTEMPT_HEADER, deadQueueName, openChannel, retryQueueName, workQueueName } from './rabbitmq-topology.ts';

export const CRASHED_ERROR = 'delivery limit exceeded: the consumer died while handling this message';

export type ConsumerDeps = {
  ns: string;
  db: Database;
  logger: Logger;
  link: RabbitLink;
  /** What a queue's dead letters keep of a message (Broker.keepInDeadLetters), if anything was said. */
  deadLetterBody?(queue: string): DeadLetterBody | undefined;
};

export type Subscription = {
  /** (Re)subscribes on a fresh connection; a no-op once stopping. */
  start(conn: ChannelModel): Promise<void>;
  /** Cancels, waits (bounded) for in-flight messages, closes the channel. */
  stop(timeoutMs?: number): Promise<void>;
  /** Messages delivered to this subscription and not settled yet. */
  inFlight(): number;
};

/** What a message callback may do with its delivery; no-ops once the channel it came on is gone
 * (the broker then redelivers it, so acting on it would only double it). */
type Settle = { live(): boolean; stopping(): boolean; ack(): void; requeue(): void };

const RETRY_CONFIRM_MS = 10_000;
const HOLD_MS = 30_000;
const DEFAULT_STOP_MS = 10_000;
/** Epoch ms of a message's first round through a wait queue for a database outage. */
const OUTAGE_HEADER = 'x-outage-since';

export function makeQueueConsumer(
  deps: ConsumerDeps,
  queue: string,
  handler: Handler,
  opts: { concurrency: number; delays: readonly number[] },
): Subscription {
  return subscribe(deps, workQueueName(deps.ns, queue), opts.concurrency, async (msg, s) => {
    const delivery = toDelivery(deps.ns, queue, msg);
    try {
      // Through a promise so a synchronous throw takes the same path as a rejection.
      await Promise.resolve().then(() => handler(delivery));
    } catch (err) {
      if (!s.live()) return;
      const log = { queue, message_id: delivery.messageId, attempt: delivery.attempt, err: errorText(err) };
      // The database away (a restart, a failover) is no fault of the message: no attempt is spent.
      // It goes round a wait queue with its attempt number unchanged (a requeue would spend the
      // quorum queue's delivery count) — for at most OUTAGE_LIMIT_MS from its first such round,
      // since a message whose own query brings the server down looks the same from here.
      const outage = outageRound(deps.ns, queue, msg, opts.delays);
      if (outage && isDatabaseUnavailable(err)) {
        deps.logger.debug({ ...log, retry_in_ms: outage.wait }, 'database unavailable; message goes round again, no attempt spent');
        await settleAfter(deps, s, () => deps.link.publish([outage.frame(delivery)], RETRY_CONFIRM_MS));
        return;
      }
      const delay = retryDelayAfter(delivery.attempt, opts.delays);
      if (delay !== undefined) {
        deps.logger.debug({ ...log, retry_in_ms: delay }, 'handler failed; retrying after a delay');
        await settleAfter(deps, s, () => deps.link.publish([retryFrame(deps.ns, queue, msg, delivery, delay)], RETRY_CONFIRM_MS));
      } else {
        deps.logger.warn(log, 'handler failed on its last attempt; dead-lettered');
        await settleAfter(deps, s, async () => {
          try {
            await insertDeadLetter(deps.db, { ...(await deadLetterOf(deps, queue, delivery)), error: errorText(err), attempts: delivery.attempt });
          } catch (insertErr) {
            // The dead letter cannot be written while the database is away: the message goes round
            // instead, its last attempt not spent, rather than be held past the broker's consumer
            // timeout or requeued towards Q.dlq (where its real error would be lost).
            if (!outage || !isDatabaseUnavailable(insertErr)) throw insertErr;
            await deps.link.publish([outage.frame(delivery)], RETRY_CONFIRM_MS);
          }
        });
      }
      return;
    }
    s.ack();
  });
}

export function makeDeadQueueDrainer(deps: ConsumerDeps, queue: string): Subscription {
  return subscribe(deps, deadQueueName(deps.ns, queue), 10, async (msg, s) => {
    const delivery = toDelivery(deps.ns, queue, msg);
    deps.logger.error({ queue, message_id: delivery.messageId }, 'a message crashed its consumer too often; dead-lettered');
    await settleAfter(deps, s, async () =>
      insertDeadLetter(deps.db, { ...(await deadLetterOf(deps, queue, delivery)), error: CRASHED_ERROR, attempts: delivery.attempt }),
    );
  });
}

/**
 * Acks once `action` (the retry hop or the dead-letter insert) succeeded. While it fails (broker
 * blocked, database down) the message is held and the action retried with a growing pause, so an
 * outage neither spins nor burns the quorum queue's delivery count; past HOLD_MS, or when the
 * consumer stops, it is requeued instead, so nothing is lost either way.
 */
async function settleAfter(deps: ConsumerDeps, s: Settle, action: () => Promise<unknown>): Promise<void> {
  const giveUpAt = Date.now() + HOLD_MS;
  for (let wait = 250; s.live(); wait = Math.min(wait * 2, 5000)) {
    try {
      await action();
      s.ack();
      return;
    } catch (err) {
      if (s.stopping() || Date.now() + wait > giveUpAt) {
        deps.logger.error({ err: errorText(err) }, 'could not retry or dead-letter a message; requeued it');
        s.requeue();
        return;
      }
      deps.logger.warn({ err: errorText(err), retry_in_ms: wait }, 'could not retry or dead-letter a message yet; holding it');
      await pause(wait);
    }
  }
}

/** A delivery's dead letter: its body, or what may be kept of it (Broker.keepInDeadLetters). */
async function deadLetterOf(deps: ConsumerDeps, queue: string, d: Delivery) {
  const keep = deps.deadLetterBody?.(queue);
  return { queue, messageId: d.messageId, routingKey: d.routingKey, headers: d.headers, body: keep ? await keep(d) : d.body };
}

/**
 * A round through a wait queue for a message that met the database away, or undefined when none
 * may go: the queue has no wait queue (no retries), or the message's rounds began more than
 * OUTAGE_LIMIT_MS ago (then its failures count as usual).
 */
function outageRound(ns: string, queue: string, msg: ConsumeMessage, delays: readonly number[]): { wait: number; frame(d: Delivery): OutgoingFrame } | undefined {
  const wait = outageDelay(delays);
  if (wait === undefined) return undefined;
  const given = Number(msg.properties.headers?.[OUTAGE_HEADER]);
  const since = Number.isFinite(given) && given > 0 ? Math.min(given, Date.now()) : Date.now();
  if (Date.now() - since > OUTAGE_LIMIT_MS) return undefined;
  return { wait, frame: (d) => retryFrame(ns, queue, msg, d, wait, d.attempt, since) };
}

function retryFrame(ns: string, queue: string, msg: ConsumeMessage, d: Delivery, delay: number, nextAttempt = d.attempt + 1, outageSince?: number): OutgoingFrame {
  const since = outageSince ?? msg.properties.headers?.[OUTAGE_HEADER];
  return {
    exchange: '',
    routingKey: retryQueueName(ns, queue, delay),
    body: msg.content,
    options: {
      persistent: true,
      mandatory: true,
      messageId: d.messageId,
      contentType: msg.properties.contentType,
      timestamp: msg.properties.timestamp,
      headers: { ...d.headers, [ATTEMPT_HEADER]: nextAttempt, [ROUTING_KEY_HEADER]: d.routingKey, ...(since !== undefined && { [OUTAGE_HEADER]: since }) },
    },
  };
}

function subscribe(
  deps: ConsumerDeps,
  source: string,
  prefetch: number,
  onMessage: (msg: ConsumeMessage, s: Settle) => Promise<void>,
): Subscription {
  let live: Channel | undefined;
  let tag: string | undefined;
  let startedOn: ChannelModel | undefined;
  let stopping = false;
  let stopped: Promise<void> | undefined;
  const inFlight = new Set<Promise<void>>();

  function settleFor(ch: Channel, msg: ConsumeMessage): Settle {
    const act = (op: () => void) => {
      if (live !== ch) return;
      try {
        op();
      } catch {
        // The channel closed under us; the broker redelivers the message.
      }
    };
    return {
      live: () => live === ch,
      stopping: () => stopping,
      ack: () => act(() => ch.ack(msg)),
      requeue: () => act(() => ch.nack(msg, false, true)),
    };
  }

  function receive(ch: Channel, conn: ChannelModel, msg: ConsumeMessage | null): void {
    if (!msg) {
      // The server cancelled us (queue deleted): a rebuild re-declares and resubscribes.
      if (!stopping) deps.link.restart(conn, `consumer of ${source} cancelled by the server`);
      return;
    }
    const p: Promise<void> = onMessage(msg, settleFor(ch, msg))
      .catch((err) => deps.logger.error({ queue: source, err: errorText(err) }, 'rabbitmq consumer failed'))
      .finally(() => inFlight.delete(p));
    inFlight.add(p);
  }

  return {
    inFlight: () => inFlight.size,
    async start(conn) {
      // Both a reconnect and consume() may start it on the same connection; once is enough.
      if (stopping || startedOn === conn) return;
      startedOn = conn;
      const ch = await openChannel(conn, (err) => deps.logger.warn({ queue: source, err: errorText(err) }, 'rabbitmq consumer channel error'));
      live = ch;
      ch.on('close', () => {
        if (live !== ch) return;
        live = undefined;
        if (!stopping) deps.link.restart(conn, `consumer channel of ${source} closed`);
      });
      try {
        await ch.prefetch(prefetch);
        const reply = await ch.consume(source, (msg) => receive(ch, conn, msg), { noAck: false });
        tag = reply.consumerTag;
      } catch (err) {
        // Not a reason to rebuild the connection: the caller (consume() or a reconnect) decides.
        if (live === ch) live = undefined;
        startedOn = undefined;
        await ch.close().catch(() => {});
        if (stopping) return;
        throw err;
      }
      if (stopping) await ch.close().catch(() => {});
    },
    stop(timeoutMs = DEFAULT_STOP_MS) {
      stopped ??= (async () => {
        stopping = true;
        const deadline = Date.now() + timeoutMs;
        const ch = live;
        if (ch && tag) await bounded(ch.cancel(tag), deadline);
        while (inFlight.size > 0 && Date.now() < deadline) await bounded(Promise.allSettled([...inFlight]), deadline);
        live = undefined; // handlers still running past the deadline must not ack on a closing channel
        if (ch) await bounded(ch.close(), Date.now() + 2000);
      })();
      return stopped;
    },
  };
}

const INTERNAL_HEADERS = new Set([ATTEMPT_HEADER, ROUTING_KEY_HEADER, OUTAGE_HEADER, 'x-death', 'x-delivery-count']);

export function toDelivery(ns: string, queue: string, msg: ConsumeMessage): Delivery {
  const raw: Record<string, unknown> = msg.properties.headers ?? {};
  const headers: Headers = {};
  for (const [k, v] of Object.entries(raw)) {
    if (typeof v !== 'string' || INTERNAL_HEADERS.has(k) || /^x-(first|last)-death-/.test(k)) continue;
    headers[k] = v;
  }
  const attempt = Number(raw[ATTEMPT_HEADER]);
  return {
    messageId: String(msg.properties.messageId ?? ''),
    queue,
    routingKey: originalRoutingKey(ns, queue, msg, raw),
    body: msg.content,
    headers,
    attempt: Number.isInteger(attempt) && attempt >= 1 ? attempt : 1,
  };
}

/** The routing key the message was published with, whatever detours it took since. */
function originalRoutingKey(ns: string, queue: string, msg: ConsumeMessage, raw: Record<string, unknown>): string {
  const kept = raw[ROUTING_KEY_HEADER];
  if (typeof kept === 'string') return kept;
  let exchange = msg.fields.exchange;
  let key = msg.fields.routingKey;
  // Dead-lettered from Q (delivery limit) without a retry before: RabbitMQ recorded where from.
  const deaths = Array.isArray(raw['x-death']) ? (raw['x-death'] as Array<Record<string, unknown>>) : [];
  const death = deaths.find((x) => x.queue === workQueueName(ns, queue));
  if (death && Array.isArray(death['routing-keys']) && typeof death['routing-keys'][0] === 'string') {
    exchange = typeof death.exchange === 'string' ? death.exchange : exchange;
    key = death['routing-keys'][0];
  }
  // Sent straight to a queue: the key is the namespaced queue name; callers know the bare one.
  return exchange === '' && ns !== '' && key.startsWith(ns) ? key.slice(ns.length) : key;
}

function pause(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms).unref());
}

/** Waits for `p` until `deadline` at most, ignoring its outcome; leaves no timer behind. */
async function bounded(p: Promise<unknown>, deadline: number): Promise<void> {
  let t: NodeJS.Timeout | undefined;
  const left = Math.max(0, deadline - Date.now());
  await Promise.race([p.catch(() => {}), new Promise<void>((r) => (t = setTimeout(r, left)))]);
  clearTimeout(t);
}
