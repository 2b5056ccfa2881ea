// A webhook receiver the test controls: a real HTTP server on 127.0.0.1 that records every request
// (headers, raw body, arrival time) and answers what the test says — a status, a status with
// headers, or nothing at all (`hang`, for timeouts and killed dispatchers).
import { createServer, type IncomingHttpHeaders, type ServerResponse } from 'node:http';
import type { AddressInfo, Socket } from 'node:net';
import { onCleanup } from '../support/env.ts';

/** `closedAt`: for a request left hanging, when its connection closed (the sender gave up). */
export type Received = { n: number; at: number; path: string; headers: IncomingHttpHeaders; body: string; closedAt?: number };

export type Answer = number | { status: number; headers?: Record<string, string>; body?: string } | 'hang';

export type Receiver = {
  url: string;
  port: number;
  requests: Received[];
  /** Decides each answer; `n` counts from 1. Replace it at any time. */
  answer: (r: Received) => Answer;
  /** Requests whose answer is `hang`, still open. */
  hanging(): number;
  close(): Promise<void>;
};

export async function startReceiver(answer: (r: Received) => Answer = () => 200): Promise<Receiver> {
  const sockets = new Set<Socket>();
  const held = new Set<ServerResponse>();
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const r: Received = { n: receiver.requests.length + 1, at: Date.now(), path: req.url ?? '/', headers: req.headers, body: Buffer.concat(chunks).toString('utf8') };
      receiver.requests.push(r);
      const a = receiver.answer(r);
      if (a === 'hang') {
        held.add(res);
        res.on('close', () => {
          held.delete(res);
          r.closedAt = Date.now();
        });
        return;
      }
      const { status, headers, body } = typeof a === 'number' ? { status: a, headers: {}, body: 'ok' } : { body: 'ok', ...a };
      res.writeHead(status, { 'content-type': 'text/plain', ...headers });
      res.end(body);
    });
  });
  server.on('connection', (s) => {
    sockets.add(s);
    s.on('close', () => sockets.delete(s));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as AddressInfo).port;
  let closed: Promise<void> | undefined;
  const receiver: Receiver = {
    url: `http://127.0.0.1:${port}/hooks`,
    port,
    requests: [],
    answer,
    hanging: () => held.size,
    close() {
      closed ??= new Promise<void>((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      });
      return closed;
    },
  };
  onCleanup(() => receiver.close());
  return receiver;
}
