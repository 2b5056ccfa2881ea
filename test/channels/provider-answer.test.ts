// A provider's answer is read up to a bound: the URL is the tenant's, and a server that streams
// without end must not fill the worker's memory. The status still counts; the rest is dropped.
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { MAX_ANSWER_BYTES, providerRequest } from '../../src/channels/provider-http.ts';
import { waitFor } from '../support/env.ts';

describe('a provider answer', () => {
  let server: Server;
  let url: string;
  // Bytes the endless answer got out before its connection closed.
  let written = 0;
  let closed = false;

  beforeAll(async () => {
    server = createServer((req, res) => {
      if (req.url === '/small') {
        res.writeHead(201, { 'content-type': 'application/json' }).end(JSON.stringify({ id: 'true_123@c.us_AAA' }));
        return;
      }
      // Endless: 64 KiB at a time until the client goes away (bounded by the test's own limit).
      res.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(64 * 1024, 0x61);
      res.write('{"id":"');
      const pump = () => {
        while (!closed && written < 64 * MAX_ANSWER_BYTES) {
          written += chunk.length;
          if (!res.write(chunk)) return void res.once('drain', pump);
        }
        res.end();
      };
      res.on('close', () => (closed = true));
      pump();
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    url = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(() => new Promise<void>((r) => server.close(() => r())));

  it('is read whole and parsed when small', async () => {
    const a = await providerRequest(`${url}/small`, { method: 'POST', headers: {}, body: { x: 1 }, timeoutMs: 5000 });
    expect(a).toMatchObject({ status: 201, json: { id: 'true_123@c.us_AAA' } });
  });

  it('is cut at MAX_ANSWER_BYTES when it does not end, its status kept and its connection dropped', async () => {
    const a = await providerRequest(`${url}/endless`, { method: 'POST', headers: {}, body: { x: 1 }, timeoutMs: 20_000 });
    expect(a.status).toBe(200);
    expect(a.json).toBeUndefined(); // a cut JSON text is not parsed
    expect(a.text.length).toBeLessThanOrEqual(MAX_ANSWER_BYTES);
    expect(a.text.length).toBeGreaterThan(MAX_ANSWER_BYTES / 2);
    await waitFor(() => closed, 'the connection to close');
    // Far less than the server would have sent (64 × the bound): we stopped reading.
    expect(written).toBeLessThan(16 * MAX_ANSWER_BYTES);
  });
});
