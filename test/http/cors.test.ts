// CORS_ORIGINS (README configuration): off by default — no CORS headers, preflights not answered;
// with origins, those origins (and only those) are allowed, preflights included.
import { describe, expect, it } from 'vitest';
import { startApp } from './harness.ts';

const preflight = { 'access-control-request-method': 'POST', 'access-control-request-headers': 'authorization' };

describe('CORS', () => {
  it('is off without CORS_ORIGINS: no CORS header on answers, no answer to a preflight', async () => {
    const { app } = await startApp();
    const get = await app.inject({ method: 'GET', url: '/health/live', headers: { origin: 'https://app.example.com' } });
    expect(get.statusCode).toBe(200);
    expect(get.headers['access-control-allow-origin']).toBeUndefined();
    const options = await app.inject({ method: 'OPTIONS', url: '/api/v1/contacts', headers: { origin: 'https://app.example.com', ...preflight } });
    expect(options.statusCode).toBe(404);
    expect(options.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('allows the listed origins, preflights included, and no other', async () => {
    const { app } = await startApp({ CORS_ORIGINS: 'https://app.example.com' });
    const allowed = await app.inject({ method: 'OPTIONS', url: '/api/v1/contacts', headers: { origin: 'https://app.example.com', ...preflight } });
    expect(allowed.statusCode).toBe(204);
    expect(allowed.headers['access-control-allow-origin']).toBe('https://app.example.com');
    const get = await app.inject({ method: 'GET', url: '/health/live', headers: { origin: 'https://app.example.com' } });
    expect(get.headers['access-control-allow-origin']).toBe('https://app.example.com');
    const other = await app.inject({ method: 'GET', url: '/health/live', headers: { origin: 'https://evil.example.net' } });
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
  });

  it('allows the listed origins to read the 400 for a URL that cannot be read', async () => {
    const { app } = await startApp({ CORS_ORIGINS: 'https://app.example.com' });
    const bad = await app.inject({ method: 'GET', url: '/api/v1/contacts/%E0%A4%A', headers: { origin: 'https://app.example.com' } });
    expect(bad.statusCode).toBe(400);
    expect(bad.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(bad.headers['access-control-allow-origin']).toBe('https://app.example.com');
    const other = await app.inject({ method: 'GET', url: '/api/v1/contacts/%E0%A4%A', headers: { origin: 'https://evil.example.net' } });
    expect(other.statusCode).toBe(400);
    expect(other.headers['access-control-allow-origin']).toBeUndefined();
    const { app: open } = await startApp({ CORS_ORIGINS: '*' });
    const any = await open.inject({ method: 'GET', url: '/api/v1/contacts/%E0%A4%A', headers: { origin: 'https://elsewhere.example.org' } });
    expect(any.headers['access-control-allow-origin']).toBe('https://elsewhere.example.org');
  });
});
