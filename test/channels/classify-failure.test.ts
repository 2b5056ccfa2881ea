// How a provider's HTTP answer to a send becomes a retry or a final failure.
import { describe, expect, it } from 'vitest';
import { classifyFailure } from '../../src/channels/sender.ts';

describe('classifyFailure', () => {
  it('retries no answer, 408, 425, 429 and server errors; the rest is final', () => {
    const retried = (status: number | null) => classifyFailure(status, 'x').retry;
    expect([null, 408, 425, 429, 500, 502, 503, 504, 599].map(retried)).toEqual(Array(9).fill(true));
    expect([400, 401, 403, 404, 409, 410, 413, 422].map(retried)).toEqual(Array(8).fill(false));
  });

  it('does not retry 501 Not Implemented or 505: the server does not do it at all', () => {
    expect(classifyFailure(501, 'Not Implemented')).toMatchObject({ retry: false, code: '501' });
    expect(classifyFailure(505, 'HTTP Version Not Supported')).toMatchObject({ retry: false, code: '505' });
  });

  it("keeps a Retry-After in seconds or as a date", () => {
    expect(classifyFailure(429, 'x', '7').retryAfterMs).toBe(7000);
    const at = new Date(Date.now() + 60_000).toUTCString();
    expect(classifyFailure(503, 'x', at).retryAfterMs).toBeGreaterThan(50_000);
  });
});
