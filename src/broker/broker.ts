// The broker port. Two adapters implement it: RabbitMQ (rabbitmq.ts) and durable queue tables in
// PostgreSQL/PGlite (postgres-broker.ts). Both pass test/broker/conformance.test.ts.
//
// Semantics every adapter guarantees:
// - publish/send resolve only once the message is durable (publisher confirm / committed row);
// - each message goes to one consumer of a queue at a time (competing consumers);
// - a handler that throws is retried after each delay in `retryDelaysMs`, then the message is
//   recorded in the `dead_letters` table with its error, attempt count and payload, and removed;
// - a consumer that dies without acking has its messages redelivered to another consumer;
// - a message that kills its consumer repeatedly (delivery limit) is dead-lettered too.

export const DOMAIN_EXCHANGE = 'domain.events';

/** Header that carries the tenant of a message, so dead letters can be shown to that tenant only. */
export const PROJECT_HEADER = 'x-project-id';

/**
 * Header a broker that can deliver one send twice (RabbitMQ: an ack lost after the consumer acted)
 * sets on every message it sends, fresh each time and kept through retries, so that one send's
 * death is recorded once (dead-letters.sql.ts).
 */
export const SEND_HEADER = 'x-send-id';

export type Headers = Record<string, string>;

export type OutgoingMessage = {
  /** Stable id (the event id for domain events). */
  messageId: string;
  body: Buffer;
  headers?: Headers;
};

export type Delivery = {
  messageId: string;
  queue: string;
  routingKey: string;
  body: Buffer;
  headers: Headers;
  /** 1 on the first try, 2 on the first retry… */
  attempt: number;
};

export type Handler = (msg: Delivery) => Promise<void>;

export type QueueSpec = {
  name: string;
  /** Topic patterns on `domain.events` (`*` one word, `#` zero or more). Empty: direct queue. */
  bindings?: readonly string[];
};

export type ConsumeOptions = {
  /** Messages handled at once by this consumer. */
  concurrency?: number;
  /** Overrides the broker-wide CONSUMER_RETRY_DELAYS for this queue. */
  retryDelaysMs?: readonly number[];
};

/**
 * What a queue's dead letters keep of a message, when not all of its body may be kept (a webhook
 * that also carries what belongs to another channel). A rejection is a failure to record the
 * death, like the dead-letter write's own: nothing is recorded yet and the message comes back (on
 * the Postgres-backed queue when its lease ends; on RabbitMQ after being held, or round a wait
 * queue while the database is away). So it should reject only while the database cannot answer.
 */
export type DeadLetterBody = (d: Delivery) => Promise<Buffer>;

export type QueueStats = {
  queue: string;
  /** Messages ready or in flight (not counting those waiting for a retry). */
  depth: number;
  /** Messages waiting in a retry delay. */
  retrying: number;
  consumers: number;
  deadLetters: number;
};

export interface Consumer {
  /** Stops taking new messages and waits (bounded) for in-flight handlers. */
  stop(timeoutMs?: number): Promise<void>;
}

export interface Broker {
  readonly kind: 'rabbitmq' | 'postgres';
  /** Declares queues, their bindings, retry and dead-letter paths. Idempotent. */
  declareQueues(specs: readonly QueueSpec[]): Promise<void>;
  /** Publishes to the topic exchange `domain.events`. Resolves when durable. */
  publish(routingKey: string, msgs: readonly OutgoingMessage[]): Promise<void>;
  /** Sends straight to one queue. Resolves when durable. */
  send(queue: string, msgs: readonly OutgoingMessage[], opts?: { timeoutMs?: number }): Promise<void>;
  consume(queue: string, handler: Handler, opts?: ConsumeOptions): Promise<Consumer>;
  /**
   * From now on this process's dead letters of `queue` — a handler's last failure, a message that
   * crashed its consumers — keep what `keep` makes of the message instead of its body. Every
   * process that may write them (any that consumes the queue or drains its crashes) says so.
   */
  keepInDeadLetters(queue: string, keep: DeadLetterBody): void;
  stats(queues?: readonly string[]): Promise<QueueStats[]>;
  /** Throws when the broker cannot be used right now, or does not answer within `timeoutMs` (default 2000; for /health/ready). */
  check(timeoutMs?: number): Promise<void>;
  close(): Promise<void>;
}

/**
 * Turns a topic pattern into an anchored regular expression. The expression is matched against
 * the routing key WITH A LEADING DOT (`.contact.created`): every word then brings its own
 * separator, so `#` (zero or more words) is simply "any number of `.word`".
 */
export function topicPatternToRegex(pattern: string): string {
  const parts = pattern.split('.').map((w) => {
    if (w === '#') return '(?:\\.[^.]+)*';
    if (w === '*') return '\\.[^.]+';
    return '\\.' + w.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  });
  return `^${parts.join('')}$`;
}

export function topicMatches(pattern: string, routingKey: string): boolean {
  return new RegExp(topicPatternToRegex(pattern)).test('.' + routingKey);
}

/** How long a message waits before attempt `attempt + 1`, or undefined when it is dead. */
export function retryDelayAfter(attempt: number, delays: readonly number[]): number | undefined {
  return attempt <= delays.length ? delays[attempt - 1] : undefined;
}

/**
 * How long a message waits before it is tried again while the database is away (no attempt
 * spent): the first retry delay of 30 s or more, else the longest (with the default delays, 30 s:
 * a backlog goes round at most twice a minute); undefined for a queue without retries. On
 * RabbitMQ only a configured delay has a wait queue to go round.
 */
export function outageDelay(delays: readonly number[]): number | undefined {
  if (delays.length === 0) return undefined;
  return [...delays].sort((a, b) => a - b).find((d) => d >= OUTAGE_ROUND_MS) ?? Math.max(...delays);
}
const OUTAGE_ROUND_MS = 30_000;

/**
 * A message goes round for outages, no attempt spent, for at most this long in its life (counted
 * from its first such round, kept through its retries); after that its failures count again.
 */
export const OUTAGE_LIMIT_MS = 60 * 60_000;

export function errorText(err: unknown): string {
  if (err instanceof Error) return `${err.name}: ${err.message}`.slice(0, 4000);
  return String(err).slice(0, 4000);
}
