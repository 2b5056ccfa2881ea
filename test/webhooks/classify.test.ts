import { describe, expect, it } from 'vitest';
import { errors as undiciErrors } from 'undici';
import { classifyAttempt } from '../../src/webhooks/classify.ts';
import { BlockedAddressError } from '../../src/webhooks/ssrf-guard.ts';
import { WebhookTimeoutError } from '../../src/webhooks/post-webhook.ts';

const sysError = (code: string, message = `${code} something`) => Object.assign(new Error(message), { code });

describe('classifyAttempt by status', () => {
  it.each([200, 201, 202, 204, 299])('treats %i as success', (statusCode) => {
    expect(classifyAttempt({ statusCode })).toMatchObject({ class: 'success', retry: false, disable: false });
  });

  it('stops and disables the subscription on 410 Gone', () => {
    expect(classifyAttempt({ statusCode: 410 })).toMatchObject({ class: 'gone', retry: false, disable: true });
  });

  it('retries 429 at its Retry-After', () => {
    expect(classifyAttempt({ statusCode: 429, retryAfter: '30' })).toEqual({
      class: 'rate_limited',
      retry: true,
      disable: false,
      retryAfterMs: 30_000,
      detail: 'HTTP 429 (Retry-After 30s)',
    });
  });

  it('retries 503 at an HTTP-date Retry-After, relative to the injected clock', () => {
    const now = Date.parse('Wed, 21 Oct 2015 07:28:00 GMT');
    const outcome = classifyAttempt({ statusCode: 503, retryAfter: 'Wed, 21 Oct 2015 07:30:00 GMT', now });
    expect(outcome).toMatchObject({ class: 'unavailable', retry: true, retryAfterMs: 120_000 });
  });

  it('leaves retryAfterMs out when 429/503 carry no usable Retry-After', () => {
    expect(classifyAttempt({ statusCode: 503 })).not.toHaveProperty('retryAfterMs');
    expect(classifyAttempt({ statusCode: 429, retryAfter: 'later' })).not.toHaveProperty('retryAfterMs');
  });

  it('ignores Retry-After on other statuses', () => {
    expect(classifyAttempt({ statusCode: 500, retryAfter: '30' })).not.toHaveProperty('retryAfterMs');
  });

  it.each([301, 302, 307, 308])('treats %i as a failed, retried redirect', (statusCode) => {
    expect(classifyAttempt({ statusCode })).toMatchObject({ class: 'redirect', retry: true, disable: false });
  });

  it.each([400, 401, 403, 404, 413, 422])('retries client error %i (the receiver may be fixed)', (statusCode) => {
    expect(classifyAttempt({ statusCode })).toMatchObject({ class: 'client_error', retry: true, disable: false });
  });

  it.each([500, 502, 504, 599, 999, 101])('retries %i as a server error', (statusCode) => {
    expect(classifyAttempt({ statusCode })).toMatchObject({ class: 'server_error', retry: true, disable: false });
  });

  it('lets a status win over an error that came after it (a stalled body)', () => {
    const outcome = classifyAttempt({ statusCode: 200, error: new WebhookTimeoutError(100) });
    expect(outcome.class).toBe('success');
  });
});

describe('classifyAttempt by error', () => {
  it.each([
    ['our per-attempt deadline', new WebhookTimeoutError(15_000)],
    ['undici connect timeout', new undiciErrors.ConnectTimeoutError()],
    ['undici headers timeout', new undiciErrors.HeadersTimeoutError()],
    ['undici body timeout', new undiciErrors.BodyTimeoutError()],
    ['ETIMEDOUT', sysError('ETIMEDOUT')],
    ['an AbortSignal.timeout reason', new DOMException('The operation was aborted due to timeout', 'TimeoutError')],
  ])('classifies %s as timeout', (_what, error) => {
    expect(classifyAttempt({ error })).toMatchObject({ class: 'timeout', retry: true, disable: false });
  });

  it.each([
    ['ECONNREFUSED', sysError('ECONNREFUSED', 'connect ECONNREFUSED 127.0.0.1:9')],
    ['ECONNRESET', sysError('ECONNRESET')],
    ['EHOSTUNREACH', sysError('EHOSTUNREACH')],
    ['an undici socket error', new undiciErrors.SocketError('other side closed')],
    ['an expired certificate', sysError('CERT_HAS_EXPIRED', 'certificate has expired')],
    ['a certificate for another host', sysError('ERR_TLS_CERT_ALTNAME_INVALID')],
    ['a peer that does not speak HTTP', sysError('HPE_INVALID_CONSTANT', 'Expected HTTP/')],
    [
      'a failed IPv4/IPv6 race',
      Object.assign(new AggregateError([sysError('ECONNREFUSED'), sysError('ECONNREFUSED')], ''), { code: 'ECONNREFUSED' }),
    ],
    ['a wrapped cause', new TypeError('fetch failed', { cause: sysError('ECONNRESET') })],
  ])('classifies %s as connection', (_what, error) => {
    expect(classifyAttempt({ error })).toMatchObject({ class: 'connection', retry: true, disable: false });
  });

  it.each(['ENOTFOUND', 'EAI_AGAIN'])('classifies %s as dns', (code) => {
    const outcome = classifyAttempt({ error: sysError(code, `getaddrinfo ${code} hooks.example.com`) });
    expect(outcome).toMatchObject({ class: 'dns', retry: true, disable: false });
    expect(outcome.detail).toContain('hooks.example.com');
  });

  it('retries an SSRF refusal (DNS may change back) without disabling', () => {
    const outcome = classifyAttempt({ error: new BlockedAddressError('hooks.example.com', '10.0.0.7') });
    expect(outcome).toMatchObject({ class: 'blocked_address', retry: true, disable: false });
    expect(outcome.detail).toContain('hooks.example.com');
    expect(outcome.detail).not.toContain('10.0.0.7'); // the attempt log is the tenant's: no internal address
  });

  it('calls anything unrecognised internal, and still retries it', () => {
    expect(classifyAttempt({ error: new TypeError('headers must be strings') })).toMatchObject({ class: 'internal', retry: true });
    expect(classifyAttempt({ error: 'a string thrown' })).toMatchObject({ class: 'internal', detail: 'a string thrown' });
    expect(classifyAttempt({})).toMatchObject({ class: 'internal', retry: true });
  });

  it('describes the error in one line with its code', () => {
    expect(classifyAttempt({ error: sysError('ECONNRESET', 'socket hang up') }).detail).toBe('socket hang up (ECONNRESET)');
    const race = Object.assign(new AggregateError([sysError('ECONNREFUSED', 'connect ECONNREFUSED ::1:80')], ''), {
      code: 'ECONNREFUSED',
    });
    expect(classifyAttempt({ error: race }).detail).toContain('connect ECONNREFUSED ::1:80');
  });
});
