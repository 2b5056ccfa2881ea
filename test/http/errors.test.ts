// The error handler's backstops, on a bare Fastify app with only it: errors from PostgreSQL that no
// route turns into a problem of its own.
import Fastify from 'fastify';
import { afterAll, describe, expect, it } from 'vitest';
import { markUnavailable } from '../../src/db/unavailable.ts';
import { errorHandler } from '../../src/http/errors.ts';

const pgError = (code: string, message: string) => Object.assign(new Error(message), { severity: 'ERROR', code });

const app = Fastify({ logger: false });
app.setErrorHandler(errorHandler);
app.get('/throw/:code', async (req) => {
  const { code } = req.params as { code: string };
  throw pgError(code, `postgres said ${code}`);
});
// As the PostgreSQL adapter throws them: marked when they say the server cannot be had.
app.get('/adapter/:code', async (req) => {
  const { code } = req.params as { code: string };
  throw markUnavailable(code === 'pool' ? new Error('timeout exceeded when trying to connect') : pgError(code, `postgres said ${code}`));
});
afterAll(() => app.close());

describe('database errors no route handles', () => {
  it.each([['40P01', 'deadlock detected'], ['40001', 'could not serialize access']])('%s (%s) is a 503 to retry, not a 500', async (code) => {
    const r = await app.inject({ method: 'GET', url: `/throw/${code}` });
    expect(r.statusCode).toBe(503);
    expect(r.headers['retry-after']).toBe('1');
    expect(r.json()).toMatchObject({ code: 'unavailable', detail: expect.stringMatching(/collided .* send it again/) });
  });

  it.each([['57P01', 'the server shutting down'], ['53300', 'too many connections'], ['pool', "no pooled connection within the pool's wait"]])(
    '%s (%s) from the adapter is a 503 saying the database cannot be reached, not a 500',
    async (code) => {
      const r = await app.inject({ method: 'GET', url: `/adapter/${code}` });
      expect(r.statusCode).toBe(503);
      expect(r.headers['retry-after']).toBe('5');
      expect(r.json()).toMatchObject({ code: 'unavailable', detail: expect.stringMatching(/^the database cannot be reached/) });
    },
  );

  it('a value PostgreSQL refuses is a 400; anything else of ours stays a 500', async () => {
    expect((await app.inject({ method: 'GET', url: '/throw/22P02' })).statusCode).toBe(400);
    const r = await app.inject({ method: 'GET', url: '/throw/42P01' });
    expect(r.statusCode).toBe(500);
    expect(r.json().code).toBe('internal');
  });
});
