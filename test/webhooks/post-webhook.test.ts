import { createServer, type IncomingMessage, type RequestListener, type Server, type ServerResponse } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Socket } from 'node:net';
import { Agent, type Dispatcher } from 'undici';
import { afterEach, describe, expect, it, onTestFinished } from 'vitest';
import { Webhook } from 'standardwebhooks';
import { classifyAttempt } from '../../src/webhooks/classify.ts';
import { postWebhook, TIMEOUT_CODE } from '../../src/webhooks/post-webhook.ts';
import { BlockedAddressError, makeGuardedDispatcher, type ResolveHost } from '../../src/webhooks/ssrf-guard.ts';
import { buildWebhookBody, generateSecret, signPayload } from '../../src/webhooks/signer.ts';

// A receiver whose answers the test controls; it records every request it gets.
type Received = { method?: string; url?: string; headers: IncomingMessage['headers']; body: string };
type Receiver = { url: string; port: number; received: Received[] };

const servers: Server[] = [];
const dispatchers: Dispatcher[] = [];

afterEach(async () => {
  await Promise.all(dispatchers.splice(0).map((d) => d.destroy()));
  await Promise.all(
    servers.splice(0).map(
      (server) =>
        new Promise<void>((resolve) => {
          server.closeAllConnections();
          server.close(() => resolve());
        }),
    ),
  );
});

async function receiver(answer: (req: IncomingMessage, res: ServerResponse, body: string) => void): Promise<Receiver> {
  const received: Received[] = [];
  const handler: RequestListener = (req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const body = Buffer.concat(chunks).toString('utf8');
      received.push({ method: req.method, url: req.url, headers: req.headers, body });
      answer(req, res, body);
    });
  };
  const server = createServer(handler);
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { url: `http://127.0.0.1:${port}`, port, received };
}

const track = <D extends Dispatcher>(d: D): D => (dispatchers.push(d), d);
const local = () => track(new Agent());
const event = {
  id: '0190a6a0-0000-7000-8000-000000000001',
  type: 'contact.created',
  occurred_at: '2024-06-01T12:00:00.000Z',
  project_id: '0190a6a0-0000-7000-8000-0000000000aa',
  data: { contact_id: 'c1' },
};

describe('postWebhook', () => {
  it('delivers the signed body once and reports a 200 with the response excerpt', async () => {
    const r = await receiver((_req, res) => res.writeHead(200, { 'content-type': 'text/plain' }).end('thanks'));
    const secret = generateSecret();
    const body = buildWebhookBody(event);
    const signed = signPayload({ id: event.id, timestamp: Math.floor(Date.now() / 1000), body, secrets: [secret] });
    const result = await postWebhook({
      url: `${r.url}/hooks`,
      body,
      headers: { ...signed, 'user-agent': 'Ventros-CRM-Webhook/test', 'x-custom': 'yes' },
      timeoutMs: 5_000,
      dispatcher: local(),
    });

    expect(result).toMatchObject({ statusCode: 200, responseExcerpt: 'thanks', responseBytes: 6, truncated: false });
    expect(result.error).toBeUndefined();
    expect(result.durationMs).toBeGreaterThanOrEqual(0);
    expect(classifyAttempt(result).class).toBe('success');
    expect(r.received).toHaveLength(1);
    const [got] = r.received;
    expect(got).toMatchObject({ method: 'POST', url: '/hooks', body });
    expect(got.headers['content-type']).toBe('application/json');
    expect(got.headers['x-custom']).toBe('yes');
    expect(got.headers['user-agent']).toBe('Ventros-CRM-Webhook/test');
    const asReceived = Object.fromEntries(Object.entries(got.headers).map(([k, v]) => [k, String(v)]));
    expect(new Webhook(secret).verify(got.body, asReceived)).toEqual(JSON.parse(body));
  });

  it('reports a 500 and its Retry-After', async () => {
    const r = await receiver((_req, res) => res.writeHead(500, { 'retry-after': '7' }).end('database down'));
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 5_000, dispatcher: local() });
    expect(result).toMatchObject({ statusCode: 500, retryAfter: '7', responseExcerpt: 'database down' });
    expect(classifyAttempt(result)).toMatchObject({ class: 'server_error', retry: true });
  });

  it('hands a 503 Retry-After to the classifier', async () => {
    const r = await receiver((_req, res) => res.writeHead(503, { 'retry-after': '120' }).end());
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 5_000, dispatcher: local() });
    expect(classifyAttempt(result)).toMatchObject({ class: 'unavailable', retry: true, retryAfterMs: 120_000 });
  });

  it('does not follow a 302', async () => {
    const r = await receiver((req, res) => {
      if (req.url === '/moved') res.writeHead(302, { location: '/target' }).end();
      else res.writeHead(200).end('followed');
    });
    const result = await postWebhook({ url: `${r.url}/moved`, body: '{}', headers: {}, timeoutMs: 5_000, dispatcher: local() });
    expect(result.statusCode).toBe(302);
    expect(r.received.map((q) => q.url)).toEqual(['/moved']);
    expect(classifyAttempt(result)).toMatchObject({ class: 'redirect', retry: true });
  });

  it('gives up on a receiver that never answers, within the timeout', async () => {
    const r = await receiver(() => {
      /* never answers */
    });
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 300, dispatcher: local() });
    expect(result.statusCode).toBeUndefined();
    expect((result.error as NodeJS.ErrnoException).code).toBe(TIMEOUT_CODE);
    expect(result.durationMs).toBeGreaterThanOrEqual(250);
    // Our 300 ms, not undici's limits (10 s to connect, 300 s for headers and body): the bound sits
    // halfway to the nearest of them, with room for a slow machine. The error code above already
    // tells our deadline from the per-phase timers postWebhook sets a second later.
    expect(result.durationMs).toBeLessThan(5_000);
    expect(classifyAttempt(result)).toMatchObject({ class: 'timeout', retry: true });
  });

  it('bounds a receiver that trickles its body with the same deadline', async () => {
    const r = await receiver((_req, res) => {
      res.writeHead(200, { 'content-type': 'text/plain' });
      res.write('partial');
    });
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 300, dispatcher: local() });
    expect(result.statusCode).toBe(200);
    expect((result.error as NodeJS.ErrnoException).code).toBe(TIMEOUT_CODE);
    expect(result.responseExcerpt).toBe('partial');
    expect(result.durationMs).toBeLessThan(5_000); // not undici's 300 s body timeout (see above)
  });

  it('keeps its deadline while the TLS handshake never finishes (undici only hears an abort once connected)', async () => {
    // A TCP server that accepts and never says a word: the https connector waits for a handshake.
    const sockets: Socket[] = [];
    const silent = createNetServer((socket) => void sockets.push(socket));
    await new Promise<void>((resolve) => silent.listen(0, '127.0.0.1', resolve));
    onTestFinished(() => new Promise<void>((resolve) => (sockets.forEach((x) => x.destroy()), silent.close(() => resolve()))));
    const { port } = silent.address() as AddressInfo;
    // The dispatcher's own connect limit is far away, as the deliveries' one is (the longest timeout a subscription may have).
    const dispatcher = track(makeGuardedDispatcher({ allowPrivate: true, timeoutMs: 300_000 }));
    const result = await postWebhook({ url: `https://127.0.0.1:${port}/hooks`, body: '{}', headers: {}, timeoutMs: 300, dispatcher });
    expect(sockets.length).toBe(1);
    expect(result.statusCode).toBeUndefined();
    expect((result.error as NodeJS.ErrnoException).code).toBe(TIMEOUT_CODE);
    expect(result.durationMs).toBeGreaterThanOrEqual(250);
    expect(result.durationMs).toBeLessThan(5_000); // not the dispatcher's 300 s connect limit
  });

  it('keeps an answer holding NUL bytes as text the database can store', async () => {
    const r = await receiver((_req, res) => res.writeHead(200).end(Buffer.from([0x6f, 0x6b, 0x00, 0x00, 0x21])));
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 5_000, dispatcher: local() });
    expect(result).toMatchObject({ statusCode: 200, responseBytes: 5, responseExcerpt: 'ok\ufffd\ufffd!' });
  });

  it('reads only 64 KiB of a 1 MiB response and keeps a 1 KiB excerpt', async () => {
    const r = await receiver((_req, res) => res.writeHead(200).end(Buffer.alloc(1024 * 1024, 'x')));
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 5_000, dispatcher: local() });
    expect(result).toMatchObject({ statusCode: 200, responseBytes: 65_536, truncated: true });
    expect(result.responseExcerpt).toBe('x'.repeat(1024));
    expect(result.error).toBeUndefined();
  });

  it('stops reading an endless response at the limit instead of waiting for its end', async () => {
    const r = await receiver((_req, res) => {
      res.writeHead(200);
      res.write(Buffer.alloc(128 * 1024, 'y')); // and never ends
    });
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 10_000, dispatcher: local() });
    expect(result).toMatchObject({ statusCode: 200, responseBytes: 65_536, truncated: true });
    expect(result.error).toBeUndefined();
    expect(result.durationMs).toBeLessThan(5_000);
  });

  it('does not cut a multi-byte character at the excerpt edge', async () => {
    const r = await receiver((_req, res) => res.writeHead(400).end(`${'a'.repeat(1023)}é and more`));
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 5_000, dispatcher: local() });
    expect(result.responseExcerpt).toBe('a'.repeat(1023));
  });

  it('reports a refused connection without throwing', async () => {
    const r = await receiver((_req, res) => res.end());
    const closed = servers.pop() as Server;
    closed.closeAllConnections();
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 5_000, dispatcher: local() });
    expect(result.statusCode).toBeUndefined();
    expect(classifyAttempt(result)).toMatchObject({ class: 'connection', retry: true });
  });

  it('reports an unusable URL or header as an error instead of throwing', async () => {
    const bad = await postWebhook({ url: 'not a url', body: '{}', headers: {}, timeoutMs: 1_000, dispatcher: local() });
    expect(bad.error).toBeInstanceOf(Error);
    const r = await receiver((_req, res) => res.end());
    const header = await postWebhook({ url: r.url, body: '{}', headers: { 'x-bad': 'a\nb' }, timeoutMs: 1_000, dispatcher: local() });
    expect(header.error).toBeInstanceOf(Error);
    expect(r.received).toHaveLength(0);
  });
});

describe('guarded dispatcher', () => {
  it('refuses 127.0.0.1 when private URLs are not allowed, before any request reaches it', async () => {
    const r = await receiver((_req, res) => res.end('should not be reached'));
    const dispatcher = track(makeGuardedDispatcher({ allowPrivate: false, timeoutMs: 2_000 }));
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 2_000, dispatcher });
    expect(result.error).toBeInstanceOf(BlockedAddressError);
    expect(result.statusCode).toBeUndefined();
    expect(classifyAttempt(result)).toMatchObject({ class: 'blocked_address', retry: true, disable: false });
    expect(r.received).toHaveLength(0);
  });

  it.each(['http://[::1]:9/', 'http://[::ffff:127.0.0.1]:9/', 'http://169.254.169.254/latest/meta-data/'])(
    'refuses the literal private address in %s',
    async (url) => {
      const dispatcher = track(makeGuardedDispatcher({ allowPrivate: false, timeoutMs: 2_000 }));
      const result = await postWebhook({ url, body: '{}', headers: {}, timeoutMs: 2_000, dispatcher });
      expect(result.error).toBeInstanceOf(BlockedAddressError);
    },
  );

  it('refuses localhost through the system resolver', async () => {
    const r = await receiver((_req, res) => res.end());
    const dispatcher = track(makeGuardedDispatcher({ allowPrivate: false, timeoutMs: 2_000 }));
    const result = await postWebhook({ url: `http://localhost:${r.port}/`, body: '{}', headers: {}, timeoutMs: 2_000, dispatcher });
    expect(result.error).toBeInstanceOf(BlockedAddressError);
    expect(r.received).toHaveLength(0);
  });

  it('checks DNS again at connect time (a host rebound to loopback after it was accepted)', async () => {
    const r = await receiver((_req, res) => res.end());
    const calls: string[] = [];
    const rebinding: ResolveHost = async (host) => {
      calls.push(host);
      return [{ address: '127.0.0.1', family: 4 }];
    };
    const dispatcher = track(makeGuardedDispatcher({ allowPrivate: false, timeoutMs: 2_000, resolve: rebinding }));
    const result = await postWebhook({ url: `http://hooks.example.com:${r.port}/`, body: '{}', headers: {}, timeoutMs: 2_000, dispatcher });
    expect(calls).toEqual(['hooks.example.com']);
    expect(result.error).toBeInstanceOf(BlockedAddressError);
    expect((result.error as BlockedAddressError).address).toBe('127.0.0.1');
    expect(r.received).toHaveLength(0);
  });

  it('delivers to loopback when private URLs are allowed', async () => {
    const r = await receiver((_req, res) => res.writeHead(204).end());
    const dispatcher = track(makeGuardedDispatcher({ allowPrivate: true, timeoutMs: 2_000 }));
    const result = await postWebhook({ url: r.url, body: '{}', headers: {}, timeoutMs: 2_000, dispatcher });
    expect(result.statusCode).toBe(204);
    expect(r.received).toHaveLength(1);
  });

  it('does not follow redirects either', async () => {
    const r = await receiver((req, res) => {
      if (req.url === '/a') res.writeHead(307, { location: '/b' }).end();
      else res.writeHead(200).end();
    });
    const dispatcher = track(makeGuardedDispatcher({ allowPrivate: true, timeoutMs: 2_000 }));
    const result = await postWebhook({ url: `${r.url}/a`, body: '{}', headers: {}, timeoutMs: 2_000, dispatcher });
    expect(result.statusCode).toBe(307);
    expect(r.received.map((q) => q.url)).toEqual(['/a']);
  });
});
