// One RabbitMQ connection that heals itself, plus publishing with publisher confirms.
// After a drop it reconnects with a capped backoff and calls `onReady` again, which re-declares the
// topology and restarts the consumers. While it is down, publishing fails at once (never hangs) so
// the ingress can spill to the database and the outbox relay can back off.
import { Socket } from 'node:net';
import amqp from 'amqplib';
import type { ChannelModel, ConfirmChannel, ConsumeMessage, Options } from 'amqplib';
import { withDeadline } from '../deadline.ts';
import type { Logger } from '../observability/logger.ts';
import { errorText } from './broker.ts';

export type PublishFailure = 'disconnected' | 'blocked' | 'closed' | 'nacked' | 'unroutable' | 'timeout' | 'backlog';

/** Every publish/send rejection of the RabbitMQ adapter. `reason` says why; all of them mean
 * "not durable, try again or spill". */
export class PublishError extends Error {
  override readonly name = 'PublishError';
  readonly code = 'broker_publish_failed';
  constructor(
    readonly reason: PublishFailure,
    message: string,
  ) {
    super(message);
  }
}

export type OutgoingFrame = {
  exchange: string;
  routingKey: string;
  body: Buffer;
  options: Options.Publish & { messageId: string };
};

export type RabbitLink = {
  /** The live connection once ready, else undefined. */
  connection(): ChannelModel | undefined;
  ready(): boolean;
  /** Publishes and resolves when every frame is confirmed; rejects with PublishError. */
  publish(frames: readonly OutgoingFrame[], timeoutMs: number): Promise<void>;
  /** Closes `conn` if it is still the live one, so everything is rebuilt on a fresh connection. */
  restart(conn: ChannelModel, why: string): void;
  /** No more reconnects from now on; publishing keeps working until close(). */
  stopReconnecting(): void;
  close(): Promise<void>;
};

export type LinkOptions = {
  url: string;
  logger: Logger;
  /** Declares topology and restarts consumers on every new connection; a throw retries later. */
  onReady: (conn: ChannelModel) => Promise<void>;
  minBackoffMs?: number;
  maxBackoffMs?: number;
  /** Bytes published and not confirmed yet, at most (default 64 MiB); beyond, a publish fails at once. */
  maxUnconfirmedBytes?: number;
  /** Confirms owed and none came for this long (default 30 s): the connection is torn down. */
  confirmStallMs?: number;
};

/**
 * What a publish channel owes: the bytes it sent without a confirm yet (amqplib keeps each one's
 * callback, and with it the frame, until the confirm or the channel's end), and when it last
 * made progress (a confirm came, or it started owing).
 */
type Owed = { bytes: number; progressAt: number };

/** Opens the first connection (rejecting when it cannot) and keeps it open afterwards. */
export async function openRabbitLink(opts: LinkOptions): Promise<RabbitLink> {
  const { logger } = opts;
  const minBackoff = opts.minBackoffMs ?? 100;
  const maxBackoff = opts.maxBackoffMs ?? 5000;
  const maxUnconfirmedBytes = opts.maxUnconfirmedBytes ?? 64 * 1024 * 1024;
  const confirmStallMs = opts.confirmStallMs ?? 30_000;
  /** What the current publish channel owes (a new channel starts owing nothing). */
  let pubOwed: Owed = { bytes: 0, progressAt: Date.now() };
  let current: ChannelModel | undefined;
  let pub: ConfirmChannel | undefined;
  let isReady = false;
  let blockedReason: string | undefined;
  let giveUp = false; // no new connections: close() has started
  let closed = false;
  let timer: NodeJS.Timeout | undefined;
  let attemptRunning = false;
  let backoff = minBackoff;
  // Sends use `mandatory`: a send to a queue that does not exist comes back as a basic.return
  // just before its ack. Unroutability belongs to the queue, not the message, so counting returns
  // per (queue, message id) is enough to fail the right sends.
  const returned = new Map<string, number>();

  async function open(): Promise<void> {
    const conn = await amqp.connect(withHeartbeat(opts.url), {
      timeout: 5000,
      noDelay: true,
      clientProperties: { connection_name: 'ventros' },
    });
    coalesceWrites(conn);
    conn.on('error', (err: Error) => logger.warn({ err: errorText(err) }, 'rabbitmq connection error'));
    conn.on('close', () => lost(conn));
    conn.on('blocked', (reason: string) => {
      blockedReason = reason || 'blocked';
      logger.warn({ reason }, 'rabbitmq blocked publishing (resource alarm)');
    });
    conn.on('unblocked', () => {
      blockedReason = undefined;
      logger.info('rabbitmq unblocked publishing');
    });
    if (giveUp) {
      await conn.close().catch(() => {});
      return;
    }
    current = conn;
    blockedReason = undefined;
    try {
      const ch = await conn.createConfirmChannel();
      ch.on('error', (err: Error) => logger.warn({ err: errorText(err) }, 'rabbitmq publish channel error'));
      ch.on('close', () => restart(conn, 'publish channel closed'));
      ch.on('return', (msg: ConsumeMessage) => {
        const key = returnKey(msg.fields.routingKey, msg.properties.messageId);
        returned.set(key, (returned.get(key) ?? 0) + 1);
      });
      pub = ch;
      pubOwed = { bytes: 0, progressAt: Date.now() };
      await opts.onReady(conn);
      if (current !== conn) throw new Error('connection lost while setting up');
      isReady = true;
    } catch (err) {
      if (current === conn) forget();
      await conn.close().catch(() => {});
      throw err;
    }
  }

  function forget(): void {
    current = undefined;
    pub = undefined;
    isReady = false;
    returned.clear();
  }

  function lost(conn: ChannelModel): void {
    if (current !== conn) return;
    forget();
    if (closed) return;
    logger.warn('rabbitmq connection lost; reconnecting');
    scheduleReconnect();
  }

  function restart(conn: ChannelModel, why: string): void {
    // Deferred: when the connection itself drops, its channels report 'close' before it does, and
    // by the next turn `lost` has already taken over.
    setImmediate(() => {
      if (current !== conn || giveUp) return;
      logger.warn({ why }, 'rabbitmq: rebuilding the connection');
      conn.close().catch(() => lost(conn));
    });
  }

  /**
   * A connection whose broker keeps it alive (heartbeats) but confirms nothing — a quorum queue
   * without a leader — would hold every frame sent on it, and the publishes behind them, without
   * end. Closing it politely waits for a broker that does not answer: the socket is destroyed,
   * which ends its channels (their confirm callbacks fail) and reconnects.
   */
  function tearDownIfStalled(conn: ChannelModel, owed: Owed): void {
    if (owed.bytes === 0 || Date.now() - owed.progressAt < confirmStallMs || current !== conn || giveUp) return;
    logger.error({ unconfirmed_bytes: owed.bytes, stalled_ms: Date.now() - owed.progressAt }, 'rabbitmq confirms nothing on a live connection; tearing it down');
    const stream = (conn as unknown as { connection?: { stream?: { destroy(err?: Error): void } } }).connection?.stream;
    // With an error: amqplib hears of a socket's end only through its 'error' and 'end' events.
    if (stream) stream.destroy(new Error(`no confirm for ${confirmStallMs} ms`));
    else conn.close().catch(() => lost(conn));
  }

  function scheduleReconnect(): void {
    if (giveUp || timer || attemptRunning) return;
    // Not unref'd on purpose: a worker whose only work is this broker must stay up to reconnect.
    const jitter = Math.round(backoff * 0.2 * Math.random());
    timer = setTimeout(async () => {
      timer = undefined;
      attemptRunning = true;
      try {
        await open();
        backoff = minBackoff;
        if (isReady) logger.info('rabbitmq reconnected');
      } catch (err) {
        backoff = Math.min(backoff * 2, maxBackoff);
        logger.warn({ err: errorText(err), retry_in_ms: backoff }, 'rabbitmq reconnect failed');
      } finally {
        attemptRunning = false;
      }
      if (!isReady && !giveUp) scheduleReconnect();
    }, backoff + jitter);
  }

  function stopReconnecting(): void {
    giveUp = true;
    if (timer) clearTimeout(timer);
    timer = undefined;
  }

  function channel(): ConfirmChannel {
    if (closed) throw new PublishError('closed', 'the RabbitMQ broker is closed');
    if (!isReady || !pub) throw new PublishError('disconnected', 'not connected to RabbitMQ');
    // A blocked connection accepts frames but does not read them: the confirm would never come.
    if (blockedReason !== undefined) throw new PublishError('blocked', `RabbitMQ blocks publishing: ${blockedReason}`);
    return pub;
  }

  function wasReturned(frame: OutgoingFrame): boolean {
    const key = returnKey(frame.routingKey, frame.options.messageId);
    const n = returned.get(key);
    if (!n) return false;
    if (n === 1) returned.delete(key);
    else returned.set(key, n - 1);
    return true;
  }

  // The first connection fails the caller instead of retrying in the background.
  attemptRunning = true;
  try {
    await open();
  } catch (err) {
    stopReconnecting();
    throw err;
  } finally {
    attemptRunning = false;
  }

  return {
    connection: () => (isReady ? current : undefined),
    ready: () => isReady && !closed,
    async publish(frames, timeoutMs) {
      if (frames.length === 0) return;
      const ch = channel();
      const conn = current!;
      const owed = pubOwed; // this channel's: a reconnect starts another
      const bytes = frames.reduce((n, f) => n + f.body.length, 0);
      // While the broker is slow to confirm, what waits for it stays in memory: past the bound,
      // refuse at once (the ingress spills to the database) instead of holding more.
      if (owed.bytes > 0 && owed.bytes + bytes > maxUnconfirmedBytes) {
        // Full, and nothing confirmed for long: a stall, not a slow broker (the publishes that
        // filled it have timed out long ago, so no timeout below would ever see it).
        tearDownIfStalled(conn, owed);
        throw new PublishError('backlog', `RabbitMQ has not confirmed ${Math.round(owed.bytes / 1024)} KiB sent before; not sending more until it does`);
      }
      if (owed.bytes === 0) owed.progressAt = Date.now();
      const confirms = frames.map(
        (f) =>
          new Promise<void>((resolve, reject) => {
            owed.bytes += f.body.length;
            let paid = false; // amqplib may still call back a send it refused, when its channel closes
            const pay = () => {
              if (!paid) owed.bytes -= f.body.length;
              paid = true;
            };
            try {
              ch.publish(f.exchange, f.routingKey, f.body, f.options, (err) => {
                pay();
                owed.progressAt = Date.now();
                if (err) reject(new PublishError(/nack/.test(err.message) ? 'nacked' : 'closed', `publish not confirmed: ${err.message}`));
                else if (f.options.mandatory && wasReturned(f)) reject(new PublishError('unroutable', `no queue named ${f.routingKey}`));
                else resolve();
              });
            } catch (err) {
              // The channel was already closed: nothing was sent.
              pay();
              throw err; // rejects this promise, like a nack would
            }
          }),
      );
      try {
        await withDeadline(Promise.all(confirms), timeoutMs, () => new PublishError('timeout', `RabbitMQ did not confirm within ${timeoutMs} ms`));
      } catch (err) {
        if (err instanceof PublishError && err.reason === 'timeout') tearDownIfStalled(conn, owed);
        throw err;
      }
    },
    restart,
    stopReconnecting,
    async close() {
      stopReconnecting();
      closed = true;
      const conn = current;
      const ch = pub;
      forget();
      await ch?.close().catch(() => {});
      await conn?.close().catch(() => {});
    },
  };
}

/**
 * amqplib hands the socket one write per frame — a system call for every publish and every ack.
 * Corking the socket at the first write of an event-loop turn and uncorking it on the next tick
 * sends everything written in that turn together, in order. Flow control is unchanged (write()
 * still reports a full buffer). Reaches into amqplib's connection (pinned version); if the shape
 * is not what it expects, it leaves the socket alone.
 */
export function coalesceWrites(conn: ChannelModel): boolean {
  const socket = (conn as unknown as { connection?: { stream?: unknown } }).connection?.stream;
  if (!(socket instanceof Socket)) return false;
  const write = socket.write;
  let corked = false;
  const uncork = () => {
    corked = false;
    socket.uncork();
  };
  socket.write = function (this: Socket, ...args: Parameters<Socket['write']>) {
    if (!corked) {
      corked = true;
      socket.cork();
      process.nextTick(uncork);
    }
    return write.apply(this, args);
  } as Socket['write'];
  return true;
}

function returnKey(routingKey: string, messageId: unknown): string {
  return `${routingKey}\u0000${String(messageId)}`;
}

/** A dead peer is noticed within ~2 heartbeats; RabbitMQ's default of 60 s is too slow for a
 * broker whose outage the ingress must notice. The URL's own value wins. */
function withHeartbeat(url: string): string {
  const u = new URL(url);
  if (!u.searchParams.has('heartbeat')) u.searchParams.set('heartbeat', '10');
  return u.toString();
}
