// `ventros simulate waha`: where it finds the channel's token and the server's address.
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { runSimulate } from '../../src/inbound/simulate.ts';
import { onCleanup, onServices } from '../support/env.ts';
import { startInbound } from '../inbound/harness.ts';
import { withConsole } from '../support/console.ts';

const CHANNEL = '0190aaaa-0000-7000-8000-000000000001';

/** Runs the command with its console output captured. */
async function simulate(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return withConsole(() => runSimulate(['waha', ...args]));
}

/**
 * A fake Ventros on 127.0.0.1: every channel lookup is refused (401, as for another project's key),
 * every webhook accepted. Records what it was asked.
 */
async function fakeVentros(): Promise<{ url: string; port: number; requests: Array<{ method: string; url: string }> }> {
  const requests: Array<{ method: string; url: string }> = [];
  const server = createServer((req: IncomingMessage, res: ServerResponse) => {
    req.resume();
    req.on('end', () => {
      requests.push({ method: req.method!, url: req.url! });
      if (req.method === 'GET') res.writeHead(401, { 'content-type': 'application/problem+json' }).end('{"detail":"invalid API key"}');
      else res.writeHead(200, { 'content-type': 'application/json' }).end('{"status":"queued"}');
    });
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  onCleanup(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  const port = (server.address() as AddressInfo).port;
  return { url: `http://127.0.0.1:${port}`, port, requests };
}

afterEach(() => {
  vi.unstubAllEnvs();
});

describe('ventros simulate: the token and the address', () => {
  it('uses --token as given, asking the API nothing, even with a VENTROS_API_KEY of another project set', async () => {
    const fake = await fakeVentros();
    vi.stubEnv('VENTROS_API_KEY', 'vk_left_over_from_another_project');
    const r = await simulate(['--channel', CHANNEL, '--token', 'the-channel-token', '--url', fake.url, '--rate', '20', '--duration', '0.25', '--messages-only']);
    expect(r.code, r.err).toBe(0);
    expect(r.out).toMatch(/accepted 5, failed 0/);
    expect(fake.requests.filter((q) => q.method === 'GET')).toEqual([]);
    expect(fake.requests.map((q) => q.url)).toEqual(Array(5).fill(`/api/v1/webhooks/waha/${CHANNEL}?token=the-channel-token`));
  });

  it('refuses a --channel that is not a UUID with exit 2, sending nothing', async () => {
    const fake = await fakeVentros();
    for (const channel of ['42', 'my-channel', `urn:uuid:${CHANNEL}`, `${CHANNEL}x`]) {
      const r = await simulate(['--channel', channel, '--token', 't', '--url', fake.url, '--rate', '20', '--duration', '0.25']);
      expect(r.code, channel).toBe(2);
      expect(r.err, channel).toContain(`--channel must be a channel id, a UUID such as 0190aaaa-0000-7000-8000-000000000000 (got "${channel}")`);
    }
    expect(fake.requests).toEqual([]);
  });

  it('reaches a server on a wildcard HOST at 127.0.0.1 when --url is not given', async () => {
    const fake = await fakeVentros();
    for (const host of ['::', '0.0.0.0']) {
      vi.stubEnv('HOST', host);
      vi.stubEnv('PORT', String(fake.port));
      const r = await simulate(['--channel', CHANNEL, '--token', 't', '--rate', '20', '--duration', '0.1', '--messages-only']);
      expect(r.code, `${host}: ${r.err}`).toBe(0);
      expect(r.out, host).toContain(`posting WAHA webhooks to http://127.0.0.1:${fake.port}/api/v1/webhooks/waha/${CHANNEL}`);
    }
    expect(fake.requests.length).toBe(4);
  });

  it('says which variable is wrong when --url is not given and HOST:PORT names no server', async () => {
    vi.stubEnv('PORT', 'eighty');
    const bad = await simulate(['--channel', CHANNEL, '--token', 't']);
    expect(bad.code).toBe(2);
    expect(bad.err).toContain('PORT: expected an integer from 0 to 65535, got "eighty"; or pass --url');
    vi.stubEnv('PORT', '0');
    const zero = await simulate(['--channel', CHANNEL, '--token', 't']);
    expect(zero.code).toBe(2);
    expect(zero.err).toContain('cannot reach HOST "127.0.0.1" PORT 0 from here: pass --url');
  });

  it.runIf(onServices)('finds the channel in the database at DATABASE_URL by its id in any case', async () => {
    const t = await startInbound({ listen: true });
    const ch = await t.createChannel();
    vi.stubEnv('VENTROS_API_KEY', '');
    vi.stubEnv('DATABASE_URL', t.dbUrl!);
    for (const id of [ch.id.toUpperCase(), ch.id]) {
      const r = await simulate(['--channel', id, '--url', t.running.url!, '--rate', '20', '--duration', '0.1', '--messages-only']);
      expect(r.code, `${id}: ${r.err}`).toBe(0);
      expect(r.out, id).toMatch(/accepted 2, failed 0/);
    }
    const missing = await simulate(['--channel', CHANNEL.toUpperCase(), '--url', t.running.url!]);
    expect(missing.code).toBe(2);
    expect(missing.err).toBe(`ventros simulate: no channel ${CHANNEL.toUpperCase()} in the database at DATABASE_URL`);
  }, 60_000);
});
