// Standard Webhooks signing (https://www.standardwebhooks.com) plus the original system's hex
// signature header, so receivers written for either keep working. Pure: no clock, no I/O besides
// the random bytes of a new secret.
import { createHmac, randomBytes } from 'node:crypto';
import { openJson } from '../domain/secret-box.ts';
import { AppError } from '../errors.ts';

export const SECRET_PREFIX = 'whsec_';

// Receivers verify with libraries that decode the key as standard base64; 24 bytes is the shortest
// key the ecosystem hands out (Svix), 64 is HMAC-SHA256's block size — longer keys are hashed down
// and add nothing.
const MIN_SECRET_BYTES = 24;
const MAX_SECRET_BYTES = 64;
const BASE64_RE = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;

/** The event as the dispatcher knows it (the envelope of contract §3, minus what we don't send). */
export type WebhookEvent = {
  id: string;
  type: string;
  occurred_at: string | Date;
  project_id: string;
  data: unknown;
};

export type SignedHeaders = {
  'webhook-id': string;
  'webhook-timestamp': string;
  'webhook-signature': string;
  'X-Webhook-Signature': string;
};

/**
 * The exact body of contract §4. Built once per delivery and stored/reused as a string: the
 * signature covers these bytes, so every retry must send the very same ones.
 */
export function buildWebhookBody(event: WebhookEvent): string {
  const occurredAt = event.occurred_at instanceof Date ? event.occurred_at : new Date(event.occurred_at);
  if (Number.isNaN(occurredAt.getTime())) {
    throw new TypeError(`event ${event.id} has an invalid occurred_at: ${String(event.occurred_at)}`);
  }
  // Key order is part of the wire format people eyeball in logs; the literal fixes it.
  return JSON.stringify({
    id: event.id,
    type: event.type,
    event: event.type, // the original system's receivers read `event`
    timestamp: occurredAt.toISOString(),
    project_id: event.project_id,
    data: event.data ?? {},
  });
}

/**
 * Signs one attempt. `timestamp` is unix seconds of this attempt (not of the event): receivers
 * reject stale timestamps, so a retry hours later must carry a fresh one. The first secret is the
 * current one; during rotation the previous secret signs too, so a receiver holding either verifies.
 */
export function signPayload(input: { id: string; timestamp: number; body: string; secrets: readonly string[] }): SignedHeaders {
  const { id, timestamp, body, secrets } = input;
  if (secrets.length === 0) throw new TypeError('signPayload needs at least one secret');
  if (!Number.isSafeInteger(timestamp) || timestamp < 0) {
    throw new TypeError(`signPayload timestamp must be unix seconds, got ${timestamp}`);
  }
  const keys = secrets.map(secretKey);
  const signed = `${id}.${timestamp}.${body}`;
  return {
    'webhook-id': id,
    'webhook-timestamp': String(timestamp),
    'webhook-signature': keys.map((k) => `v1,${createHmac('sha256', k).update(signed).digest('base64')}`).join(' '),
    'X-Webhook-Signature': createHmac('sha256', keys[0]).update(body).digest('hex'),
  };
}

/** A new subscription secret: `whsec_` + base64 of `bytes` random bytes (32 by default). */
export function generateSecret(bytes = 32): string {
  if (!Number.isInteger(bytes) || bytes < MIN_SECRET_BYTES || bytes > MAX_SECRET_BYTES) {
    throw new RangeError(`secret length must be ${MIN_SECRET_BYTES}..${MAX_SECRET_BYTES} bytes, got ${bytes}`);
  }
  return SECRET_PREFIX + randomBytes(bytes).toString('base64');
}

/**
 * What is wrong with a user-given secret, or undefined when it is usable. Exposed separately so a
 * caller collecting several field errors can use it without catching.
 */
export function secretProblem(secret: unknown): string | undefined {
  if (typeof secret !== 'string') return 'secret must be a string';
  if (!secret.startsWith(SECRET_PREFIX)) {
    return `secret must start with "${SECRET_PREFIX}" followed by base64 (e.g. "${SECRET_PREFIX}" + \`openssl rand -base64 32\`)`;
  }
  const encoded = secret.slice(SECRET_PREFIX.length);
  // Buffer's decoder skips invalid characters silently; check the alphabet first so a typo is an
  // error here rather than a signature mismatch at the receiver.
  if (encoded === '' || !BASE64_RE.test(encoded)) {
    return `the part after "${SECRET_PREFIX}" must be standard base64 (A-Z a-z 0-9 + /, "=" padding)`;
  }
  const length = Buffer.from(encoded, 'base64').length;
  if (length < MIN_SECRET_BYTES || length > MAX_SECRET_BYTES) {
    return `secret must decode to ${MIN_SECRET_BYTES}..${MAX_SECRET_BYTES} bytes, got ${length}`;
  }
  return undefined;
}

/** Throws a validation error (400, field `secret`) for an unusable user-given secret. */
export function validateSecret(secret: unknown): asserts secret is string {
  const problem = secretProblem(secret);
  if (problem) throw new AppError('validation', problem, [{ field: 'secret', message: problem }]);
}

/** The HMAC key: the base64-decoded part after the prefix. */
export function secretKey(secret: string): Buffer {
  if (!secret.startsWith(SECRET_PREFIX)) throw new TypeError(`webhook secret must start with ${SECRET_PREFIX}`);
  const key = Buffer.from(secret.slice(SECRET_PREFIX.length), 'base64');
  if (key.length === 0) throw new TypeError('webhook secret is empty');
  return key;
}

/**
 * The secrets a sealed secret column holds: one (the current secret, and the previous one as
 * rotations before several could be kept wrote it) or several (the previous ones, newest first).
 */
export function openSecrets(secretKey: string, sealed: string): string[] {
  const v = openJson<unknown>(secretKey, sealed);
  const all = Array.isArray(v) ? v : [v];
  if (!all.every((x): x is string => typeof x === 'string')) throw new Error('a sealed webhook secret holds something else');
  return all;
}
