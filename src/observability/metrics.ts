// Every Prometheus metric of contract.md §5 lives here, in one registry, so names stay fixed and
// each is declared once. Modules import the metric they update.
import client from 'prom-client';

export const registry = new client.Registry();
client.collectDefaultMetrics({ register: registry });

const r = [registry];

export const httpRequestDuration = new client.Histogram({
  name: 'http_request_duration_seconds',
  help: 'HTTP request duration by method, route template and status',
  labelNames: ['method', 'route', 'status'] as const,
  buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5],
  registers: r,
});

export const inboundEventsTotal = new client.Counter({
  name: 'inbound_events_total',
  help: 'Provider webhook events by provider, event type and result',
  labelNames: ['provider', 'event', 'result'] as const,
  registers: r,
});

/** Distinct event names, besides the providers' known ones, a process labels `inbound_events_total` with. */
export const MAX_EVENT_LABELS = 100;
/** The providers' documented event names (WAHA's events, the Cloud API's fields, our own): always labelled as they are. */
const KNOWN_EVENTS = new Set([
  'webhook', 'message', 'message.any', 'message.ack', 'message.reaction', 'message.revoked', 'message.edited', 'message.waiting',
  'session.status', 'presence.update', 'poll.vote', 'poll.vote.failed', 'chat.archive', 'call.received', 'call.accepted',
  'call.rejected', 'label.upsert', 'label.deleted', 'label.chat.added', 'label.chat.deleted', 'group.join', 'group.leave',
  'group.v2.join', 'group.v2.leave', 'group.v2.update', 'group.v2.participants', 'event.response', 'event.response.failed',
  'engine.event', 'state.change', 'messages', 'statuses', 'errors',
]);

/**
 * A label for values that come from outside: `known` ones as they are, others while they look
 * like `shape` and fewer than `max` have been seen by this process; the rest `other`. Anyone who
 * can make us count a value must not be able to mint a time series per request.
 */
function boundedLabel(shape: RegExp, max: number, known: ReadonlySet<string> = new Set()): (value: string) => string {
  const seen = new Set<string>();
  return (value) => {
    if (known.has(value) || seen.has(value)) return value;
    if (!shape.test(value) || seen.size >= max) return 'other';
    seen.add(value);
    return value;
  };
}

/**
 * The `event` label for a provider's event name. The name comes from the webhook body, so anyone
 * holding a channel's token could otherwise mint a time series per request: a name is kept as it is
 * when the provider documents it, or when it looks like one (lowercase, dotted, at most 40
 * characters) and is among the first MAX_EVENT_LABELS others seen; else it is `other`. So names
 * made up to fill the others cannot push out the real ones. The events we handle are a handful; the rest are
 * providers' events we count and skip (WAHA's presence.update, call.received…).
 */
export const eventLabel: (name: string) => string = boundedLabel(/^[a-z][a-z0-9._-]{0,39}$/, MAX_EVENT_LABELS, KNOWN_EVENTS);

export const inboundAckDuration = new client.Histogram({
  name: 'inbound_ack_duration_seconds',
  help: 'Time from a provider webhook arriving to our 200 (publish confirmed or spilled)',
  buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1],
  registers: r,
});

export const outboxPending = new client.Gauge({
  name: 'outbox_pending',
  help: 'Outbox rows committed but not yet confirmed by the broker',
  registers: r,
});

export const outboxPublishLag = new client.Histogram({
  name: 'outbox_publish_lag_seconds',
  help: 'Time from outbox commit to broker confirm',
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: r,
});

export const consumerMessagesTotal = new client.Counter({
  name: 'consumer_messages_total',
  help: 'Messages handled by consumer and result (ok, failed)',
  labelNames: ['consumer', 'result'] as const,
  registers: r,
});

export const consumerDuration = new client.Histogram({
  name: 'consumer_duration_seconds',
  help: 'Handler duration by consumer',
  labelNames: ['consumer'] as const,
  buckets: [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 15],
  registers: r,
});

export const queueDepth = new client.Gauge({
  name: 'queue_depth',
  help: 'Messages waiting in a queue',
  labelNames: ['queue'] as const,
  registers: r,
});

export const dbPoolConnections = new client.Gauge({
  name: 'db_pool_connections',
  help: "This process's pooled PostgreSQL connections: busy (checked out) or idle",
  labelNames: ['state'] as const,
  registers: r,
});

export const dbPoolMaxConnections = new client.Gauge({
  name: 'db_pool_max_connections',
  help: 'The most pooled PostgreSQL connections this process opens (DATABASE_POOL_MAX)',
  registers: r,
});

export const dbPoolWaiting = new client.Gauge({
  name: 'db_pool_waiting',
  help: 'Callers of this process waiting for a pooled PostgreSQL connection',
  registers: r,
});

export const deadLettersGauge = new client.Gauge({
  name: 'dead_letters',
  help: 'Dead letters not yet replayed, by queue',
  labelNames: ['queue'] as const,
  registers: r,
});

export const webhookDeliveriesTotal = new client.Counter({
  name: 'webhook_deliveries_total',
  help: 'Webhook delivery attempts by result (succeeded, retrying, dead, disabled)',
  labelNames: ['result'] as const,
  registers: r,
});

export const webhookAttemptDuration = new client.Histogram({
  name: 'webhook_attempt_duration_seconds',
  help: 'Duration of one webhook POST attempt',
  buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30],
  registers: r,
});

export const webhookCircuitOpen = new client.Gauge({
  name: 'webhook_circuit_open',
  help: '1 while the circuit breaker of a subscription is open',
  labelNames: ['subscription'] as const,
  registers: r,
});

export const outboundSendsTotal = new client.Counter({
  name: 'outbound_sends_total',
  help: "Attempts to send a reply through its provider, by outcome (sent, retrying, failed) and the provider's code",
  labelNames: ['provider', 'result', 'code'] as const,
  registers: r,
});

export const outboundSendDuration = new client.Histogram({
  name: 'outbound_send_duration_seconds',
  help: "Time for the provider to answer one send (WAHA's or the Graph API's request)",
  labelNames: ['provider'] as const,
  buckets: [0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 15, 30],
  registers: r,
});

export const outboundQueued = new client.Gauge({
  name: 'outbound_queued',
  help: 'Replies queued and not yet sent or failed (waiting, or between retries)',
  registers: r,
});

export const outboundOldestQueuedSeconds = new client.Gauge({
  name: 'outbound_oldest_queued_seconds',
  help: 'Age of the oldest queued reply (0 when none)',
  registers: r,
});

const providerCodeLabel = boundedLabel(/^[a-z0-9_]{1,24}$/i, 100);
/**
 * A provider's code as a label: short codes (an HTTP status, Meta's 131047, ours) are kept, the
 * first 100 of them a process sees; anything else is `other`, none is `none`.
 */
export function codeLabel(code: string | null): string {
  return code === null ? 'none' : providerCodeLabel(code);
}

export const sessionsActive = new client.Gauge({
  name: 'sessions_active',
  help: 'Conversation sessions currently active',
  registers: r,
});
