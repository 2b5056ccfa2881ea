import { createHmac } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { Webhook, WebhookVerificationError } from 'standardwebhooks';
import { AppError } from '../../src/errors.ts';
import {
  buildWebhookBody,
  generateSecret,
  secretKey,
  secretProblem,
  signPayload,
  validateSecret,
} from '../../src/webhooks/signer.ts';

const event = {
  id: '0190a6a0-0000-7000-8000-000000000001',
  type: 'message.received',
  occurred_at: '2024-06-01T12:34:56.789Z',
  project_id: '0190a6a0-0000-7000-8000-0000000000aa',
  data: { message_id: 'm1', text: 'olá 👋' },
};
const nowSeconds = () => Math.floor(Date.now() / 1000);
const secretOf = (bytes: number) => `whsec_${Buffer.alloc(bytes, 7).toString('base64')}`;

describe('buildWebhookBody', () => {
  it('builds the contract body with keys in order and `event` mirroring `type`', () => {
    expect(buildWebhookBody(event)).toBe(
      '{"id":"0190a6a0-0000-7000-8000-000000000001","type":"message.received","event":"message.received",' +
        '"timestamp":"2024-06-01T12:34:56.789Z","project_id":"0190a6a0-0000-7000-8000-0000000000aa",' +
        '"data":{"message_id":"m1","text":"olá 👋"}}',
    );
  });

  it('accepts a Date occurred_at and writes it as ISO 8601', () => {
    const body = JSON.parse(buildWebhookBody({ ...event, occurred_at: new Date(Date.UTC(2024, 0, 2, 3, 4, 5)) }));
    expect(body.timestamp).toBe('2024-01-02T03:04:05.000Z');
  });

  it('refuses an occurred_at that is not a date', () => {
    expect(() => buildWebhookBody({ ...event, occurred_at: 'yesterday' })).toThrow(/occurred_at/);
  });
});

describe('signPayload', () => {
  const body = buildWebhookBody(event);

  it('produces headers the standardwebhooks package verifies', () => {
    const secret = generateSecret();
    const headers = signPayload({ id: event.id, timestamp: nowSeconds(), body, secrets: [secret] });
    expect(headers['webhook-id']).toBe(event.id);
    expect(headers['webhook-signature']).toMatch(/^v1,[A-Za-z0-9+/]+=*$/);
    expect(new Webhook(secret).verify(body, headers)).toEqual(JSON.parse(body));
  });

  it('signs with both secrets during rotation, so a receiver holding either verifies', () => {
    const current = generateSecret();
    const previous = generateSecret();
    const headers = signPayload({ id: event.id, timestamp: nowSeconds(), body, secrets: [current, previous] });
    expect(headers['webhook-signature'].split(' ')).toHaveLength(2);
    expect(new Webhook(current).verify(body, headers)).toEqual(JSON.parse(body));
    expect(new Webhook(previous).verify(body, headers)).toEqual(JSON.parse(body));
    expect(() => new Webhook(generateSecret()).verify(body, headers)).toThrow(WebhookVerificationError);
  });

  it('fails verification when the body is altered', () => {
    const secret = generateSecret();
    const headers = signPayload({ id: event.id, timestamp: nowSeconds(), body, secrets: [secret] });
    expect(() => new Webhook(secret).verify(body.replace('olá', 'ola'), headers)).toThrow(WebhookVerificationError);
  });

  it('puts a hex HMAC-SHA256 of the raw body with the current secret in X-Webhook-Signature', () => {
    const current = generateSecret();
    const previous = generateSecret();
    const headers = signPayload({ id: event.id, timestamp: 1_700_000_000, body, secrets: [current, previous] });
    const key = Buffer.from(current.slice('whsec_'.length), 'base64');
    expect(headers['X-Webhook-Signature']).toBe(createHmac('sha256', key).update(body, 'utf8').digest('hex'));
    expect(headers['X-Webhook-Signature']).toMatch(/^[0-9a-f]{64}$/);
  });

  it('signs "{id}.{timestamp}.{body}" for webhook-signature', () => {
    const secret = secretOf(32);
    const headers = signPayload({ id: 'evt_1', timestamp: 1_700_000_000, body: '{}', secrets: [secret] });
    const expected = createHmac('sha256', secretKey(secret)).update('evt_1.1700000000.{}').digest('base64');
    expect(headers['webhook-timestamp']).toBe('1700000000');
    expect(headers['webhook-signature']).toBe(`v1,${expected}`);
  });

  it('refuses to sign without a secret or with a millisecond timestamp', () => {
    expect(() => signPayload({ id: 'e', timestamp: 1, body: '{}', secrets: [] })).toThrow(/at least one secret/);
    expect(() => signPayload({ id: 'e', timestamp: 1.5, body: '{}', secrets: [secretOf(32)] })).toThrow(/unix seconds/);
  });
});

describe('secrets', () => {
  it('generates whsec_ secrets of 32 random bytes that validate', () => {
    const a = generateSecret();
    const b = generateSecret();
    expect(a).toMatch(/^whsec_[A-Za-z0-9+/]+=*$/);
    expect(secretKey(a)).toHaveLength(32);
    expect(a).not.toBe(b);
    expect(secretProblem(a)).toBeUndefined();
    expect(secretKey(generateSecret(24))).toHaveLength(24);
    expect(() => generateSecret(8)).toThrow(RangeError);
  });

  it('accepts user secrets of 24 to 64 bytes', () => {
    expect(() => validateSecret(secretOf(24))).not.toThrow();
    expect(() => validateSecret(secretOf(64))).not.toThrow();
  });

  it.each([
    ['no prefix', Buffer.alloc(32).toString('base64'), /must start with "whsec_"/],
    ['empty after the prefix', 'whsec_', /standard base64/],
    ['not base64', 'whsec_not*base64!!', /standard base64/],
    ['url-safe base64', `whsec_${Buffer.alloc(32, 0xfb).toString('base64url')}`, /standard base64/],
    ['too short', secretOf(16), /24\.\.64 bytes, got 16/],
    ['too long', secretOf(65), /24\.\.64 bytes, got 65/],
    ['not a string', 42, /must be a string/],
  ])('rejects a secret with %s', (_what, secret, message) => {
    let caught: unknown;
    try {
      validateSecret(secret);
    } catch (err) {
      caught = err;
    }
    expect(caught).toBeInstanceOf(AppError);
    const error = caught as AppError;
    expect(error.code).toBe('validation');
    expect(error.message).toMatch(message);
    expect(error.errors).toEqual([{ field: 'secret', message: error.message }]);
  });
});
