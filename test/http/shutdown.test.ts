// Stopping a process while a request is still being answered (a long media download, a handler
// waiting on something slow): the server stops taking requests and waits for those in flight up to
// a grace (half of SHUTDOWN_TIMEOUT_MS), then closes their connections, so that the relay and the
// connections are still stopped after the consumers before the process is made to exit. Before,
// the stop waited for the request, and the process was killed at the deadline with nothing stopped.
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { withDeadline } from '../../src/deadline.ts';
import { closeHttp } from '../../src/http/app.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { waitFor } from '../support/env.ts';

async function serverWithAHangingRoute() {
  const app = Fastify();
  let entered = false;
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  app.get('/slow', async () => {
    entered = true;
    await gate;
    return { done: true };
  });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  const answer = fetch(`${url}/slow`).then((r) => r.status, (err: unknown) => err);
  await waitFor(() => entered, 'the request to be in its handler');
  return { app, answer, release };
}

describe('closing the HTTP server at shutdown', () => {
  it('closes the connection of a request still open after the grace, and returns', async () => {
    const { app, answer, release } = await serverWithAHangingRoute();
    const started = Date.now();
    await withDeadline(closeHttp(app, 300, silentLogger), 3_000, 'closeHttp still waiting for the request');
    expect(Date.now() - started).toBeGreaterThanOrEqual(290);
    expect(app.server.listening).toBe(false);
    expect(await answer).toBeInstanceOf(Error); // its connection was closed: no answer
    release();
  });

  it('waits for a request that ends within the grace, and no longer', async () => {
    const { app, answer, release } = await serverWithAHangingRoute();
    const closing = closeHttp(app, 5_000, silentLogger);
    // Answered once the close has begun: its connection, kept alive, becomes idle only then.
    await waitFor(() => !app.server.listening, 'the server to stop listening');
    release();
    await withDeadline(closing, 3_000, 'closeHttp did not return once the request ended');
    expect(await answer).toBe(200);
  });
});
