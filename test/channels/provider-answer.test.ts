// A provider's answer is read up to a bound: the URL is the tenant's, and a server that streams
// without end must not fill the worker's memory. The status still counts; the rest is dropped.
import { createServer, type Server } from 'node:http';
import { createServer as createNetServer, type AddressInfo, type Server as NetServer, type Socket } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { cloudSender } from '../../src/channels/cloud.client.ts';
import { MAX_ANSWER_BYTES, providerRequest } from '../../src/channels/provider-http.ts';
import type { SendingChannel } from '../../src/channels/sender.ts';
import { wahaSender, wahaSessionStatus } from '../../src/channels/waha.client.ts';
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

// A status is an answer even when the body after it breaks off: a send the provider answered 2xx
// went out, and sending it again would reach the customer twice.
describe('a provider answer whose body breaks off', () => {
  let server: NetServer;
  let base: string;
  const sockets = new Set<Socket>();

  beforeAll(async () => {
    server = createNetServer((socket) => {
      sockets.add(socket);
      socket.on('close', () => sockets.delete(socket));
      socket.once('data', (head) => {
        const status = /^\S+ \/(\d{3})/.exec(head.toString('latin1'))?.[1] ?? '200';
        const stall = head.toString('latin1').includes('stall');
        socket.write(`HTTP/1.1 ${status} X\r\ncontent-type: application/json\r\ncontent-length: 200\r\n\r\n{"messages":[{"id":`);
        // Close after part of the body (what the client has read stays read: no reset), or hold the
        // rest back past the client's deadline.
        if (!stall) socket.end();
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  });
  afterAll(async () => {
    for (const s of sockets) s.destroy();
    await new Promise<void>((r) => server.close(() => r()));
  });

  const cloud = (path: string): SendingChannel => ({ id: 'c', type: 'whatsapp_cloud', config: { api_base_url: `${base}/${path}`, phone_number_id: '1' }, secrets: { access_token: 't' } });
  const waha = (path: string): SendingChannel => ({ id: 'w', type: 'waha', config: { base_url: `${base}/${path}`, session: 'default' }, secrets: { api_key: 'k' } });
  const to = { phone: '+5511999990000', waLid: null };
  const text = { type: 'text' as const, text: 'hi', media: null, replyToExternalId: null };

  it('keeps its status when the connection closes mid-body, and a 2xx send counts as sent', async () => {
    const a = await providerRequest(`${base}/200`, { method: 'POST', headers: {}, body: { x: 1 }, timeoutMs: 5000 });
    expect(a).toMatchObject({ status: 200, json: undefined, bodyBroken: expect.any(String) });
    expect(await cloudSender.send(cloud('200'), to, text, undefined)).toEqual({ ok: true, externalId: null });
    expect(await wahaSender.send(waha('200'), to, text, undefined)).toEqual({ ok: true, externalId: null });
  });

  it('keeps its status when the body stalls past the deadline', async () => {
    const a = await providerRequest(`${base}/201/stall`, { method: 'POST', headers: {}, body: { x: 1 }, timeoutMs: 300 });
    expect(a).toMatchObject({ status: 201, json: undefined, bodyBroken: expect.any(String) });
  });

  it('is no answer when it is an error whose body breaks off (the reason to retry may be in it), and is tried again', async () => {
    await expect(providerRequest(`${base}/422`, { method: 'POST', headers: {}, body: { x: 1 }, timeoutMs: 5000 })).rejects.toThrow();
    expect(await wahaSender.send(waha('422'), to, text, undefined)).toMatchObject({ ok: false, retry: true });
    expect(await cloudSender.send(cloud('400'), to, text, undefined)).toMatchObject({ ok: false, retry: true });
  });

  it('tells a status read that the answer broke off', async () => {
    const status = await wahaSessionStatus({ baseUrl: `${base}/200`, session: 'default', apiKey: 'k' });
    expect(status).toEqual({ ok: false, error: expect.stringMatching(/broke off its answer/) });
  });
});
