// Wire shapes of /webhook-subscriptions and /webhook-deliveries (contract.md §2), and the mapping
// from the service's records to them.
import { Type } from '@sinclair/typebox';
import { DELIVERY_STATUSES, type AttemptRecord, type DeliveryRecord, type DeliveryStatus } from '../../db/webhook-deliveries.sql.ts';
import type { SubscriptionView } from '../../services/webhook-subscriptions.service.ts';
import { MAX_HEADERS } from '../../webhooks/subscription-input.ts';
import { Nullable, Timestamp, Uuid, iso, isoOrNull } from './common.ts';

const Headers = Type.Unsafe<Record<string, string>>({
  type: 'object',
  additionalProperties: { type: 'string', maxLength: 2000 },
  maxProperties: MAX_HEADERS,
  description: 'Custom request headers (e.g. Authorization for your endpoint), sent with every delivery',
});
const Events = Type.Array(Type.String({ minLength: 1, maxLength: 100 }), {
  minItems: 1,
  maxItems: 100,
  description: 'Event types: exact ("message.received"), a prefix ("contact.*") or "*". See /webhook-subscriptions/available-events',
});
const Secret = Type.String({ maxLength: 200, description: 'whsec_ + base64 of 24–64 random bytes; generated when absent' });
const MaxAttempts = Type.Integer({ minimum: 1, maximum: 50, description: 'Attempts per delivery (default: the retry schedule length + 1); recover grants them again, a manual retry one more' });
const TimeoutSeconds = Type.Integer({ minimum: 1, maximum: 300, description: 'Per-attempt timeout (default: WEBHOOK_TIMEOUT_MS)' });
const RateLimit = Type.Integer({ minimum: 1, maximum: 10_000, description: 'At most this many requests per second to this endpoint (per dispatcher process)' });

export const SubscriptionBody = Type.Object(
  {
    name: Type.Optional(Nullable(Type.String({ maxLength: 200 }))),
    url: Type.String({ minLength: 1, maxLength: 2048, description: 'http(s) URL we POST to' }),
    events: Events,
    headers: Type.Optional(Headers),
    secret: Type.Optional(Secret),
    max_attempts: Type.Optional(Nullable(MaxAttempts)),
    timeout_seconds: Type.Optional(Nullable(TimeoutSeconds)),
    rate_limit_per_second: Type.Optional(Nullable(RateLimit)),
    active: Type.Optional(Type.Boolean()),
  },
  { additionalProperties: false },
);

export const SubscriptionPatch = Type.Object(
  {
    name: Type.Optional(Nullable(Type.String({ maxLength: 200 }))),
    url: Type.Optional(Type.String({ minLength: 1, maxLength: 2048 })),
    events: Type.Optional(Events),
    headers: Type.Optional(Headers),
    max_attempts: Type.Optional(Nullable(MaxAttempts)),
    timeout_seconds: Type.Optional(Nullable(TimeoutSeconds)),
    rate_limit_per_second: Type.Optional(Nullable(RateLimit)),
    active: Type.Optional(Type.Boolean({ description: 'true re-enables a disabled subscription' })),
  },
  { additionalProperties: false, minProperties: 1 },
);

export const Subscription = Type.Object(
  {
    id: Uuid,
    name: Nullable(Type.String()),
    url: Type.String(),
    events: Type.Array(Type.String()),
    headers: Headers,
    max_attempts: Type.Integer(),
    timeout_seconds: Type.Integer(),
    rate_limit_per_second: Nullable(Type.Integer()),
    active: Type.Boolean(),
    paused: Type.Boolean({ description: 'Paused deliveries wait (no attempts spent) until resumed; one held WEBHOOK_RETENTION_DAYS is made dead (recoverable)' }),
    disabled_at: Nullable(Timestamp),
    disabled_reason: Nullable(Type.String()),
    previous_secret_expires_at: Nullable(Timestamp),
    success_count: Type.Integer(),
    failure_count: Type.Integer(),
    last_success_at: Nullable(Timestamp),
    last_failure_at: Nullable(Timestamp),
    failing_since: Nullable(Timestamp),
    last_status_code: Nullable(Type.Integer()),
    last_error: Nullable(Type.String()),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'WebhookSubscription' },
);

export const SubscriptionWithSecret = Type.Composite([Subscription, Type.Object({ secret: Type.String({ description: 'Shown once' }) })], {
  title: 'WebhookSubscriptionCreated',
});

export const Rotated = Type.Object({
  secret: Type.String({ description: 'The new secret, shown once' }),
  previous_secret_expires_at: Timestamp,
});

export const RecoverBody = Type.Object({ since: Timestamp }, { additionalProperties: false });
export const Recovered = Type.Object({ recovered: Type.Integer({ description: 'Dead deliveries queued again' }) });

export const AvailableEvents = Type.Object({
  data: Type.Array(Type.Object({ type: Type.String(), description: Type.String() })),
});

export const DeliveryStatusParam = Type.Unsafe<DeliveryStatus>({ type: 'string', enum: [...DELIVERY_STATUSES] });

export const Delivery = Type.Object(
  {
    id: Uuid,
    subscription_id: Uuid,
    event_id: Uuid,
    event_type: Type.String(),
    status: DeliveryStatusParam,
    attempts: Type.Integer(),
    next_attempt_at: Nullable(Timestamp),
    last_status_code: Nullable(Type.Integer()),
    last_error: Nullable(Type.String()),
    created_at: Timestamp,
    updated_at: Timestamp,
  },
  { title: 'WebhookDelivery' },
);

export const Attempt = Type.Object({
  n: Type.Integer(),
  at: Timestamp,
  status_code: Nullable(Type.Integer()),
  duration_ms: Nullable(Type.Integer()),
  error_class: Type.String({ description: 'success, server_error, timeout, connection, interrupted…' }),
  error: Nullable(Type.String()),
  response_excerpt: Nullable(Type.String()),
});

// contract.md §2: the detail carries `attempts` as the attempt log; the count moves to attempt_count.
export const DeliveryWithAttempts = Type.Composite(
  [Type.Omit(Delivery, ['attempts']), Type.Object({ attempt_count: Type.Integer(), attempts: Type.Array(Attempt) })],
  { title: 'WebhookDeliveryDetail' },
);

export function presentSubscription(s: SubscriptionView) {
  return {
    id: s.id,
    name: s.name,
    url: s.url,
    events: s.events,
    headers: s.headers,
    max_attempts: s.maxAttempts,
    timeout_seconds: s.timeoutSeconds,
    rate_limit_per_second: s.rateLimitPerSecond,
    active: s.active,
    paused: s.paused,
    disabled_at: isoOrNull(s.disabledAt),
    disabled_reason: s.disabledReason,
    previous_secret_expires_at: isoOrNull(s.previousSecretExpiresAt),
    success_count: s.successCount,
    failure_count: s.failureCount,
    last_success_at: isoOrNull(s.lastSuccessAt),
    last_failure_at: isoOrNull(s.lastFailureAt),
    failing_since: isoOrNull(s.failingSince),
    last_status_code: s.lastStatusCode,
    last_error: s.lastError,
    created_at: iso(s.createdAt),
    updated_at: iso(s.updatedAt),
  };
}

export function presentDelivery(d: DeliveryRecord) {
  return {
    id: d.id,
    subscription_id: d.subscriptionId,
    event_id: d.eventId,
    event_type: d.eventType,
    status: d.status,
    attempts: d.attempts,
    next_attempt_at: isoOrNull(d.nextAttemptAt),
    last_status_code: d.lastStatusCode,
    last_error: d.lastError,
    created_at: iso(d.createdAt),
    updated_at: iso(d.updatedAt),
  };
}

export function presentDeliveryDetail(d: DeliveryRecord & { attemptLog: AttemptRecord[] }) {
  const { attempts, ...rest } = presentDelivery(d);
  return { ...rest, attempt_count: attempts, attempts: d.attemptLog.map(presentAttempt) };
}

export function presentAttempt(a: AttemptRecord) {
  return {
    n: a.n,
    at: iso(a.at),
    status_code: a.statusCode,
    duration_ms: a.durationMs,
    error_class: a.errorClass,
    error: a.error,
    response_excerpt: a.responseExcerpt,
  };
}
