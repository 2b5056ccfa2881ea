// `ventros simulate waha`: posts a steady stream of realistic webhooks to a listening server and
// reports what it saw; everything it reports as accepted ends up stored.
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { once } from 'node:events';
import type { AddressInfo } from 'node:net';
import { describe, expect, it, vi } from 'vitest';
import { newWebhookToken } from '../../src/services/channels.service.ts';
import { runLoad, runSimulate } from '../../src/inbound/simulate.ts';
import { makeWahaGenerator } from '../../src/inbound/simulate-payloads.ts';
import { parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';
import { onCleanup, waitFor } from '../support/env.ts';
import { count, startInbound } from './harness.ts';
import { withConsole } from '../support/console.ts';

/** Runs the command with its console output captured. */
async function simulate(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return withConsole(() => runSimulate(['waha', ...args]));
}

/** A webhook receiver on 127.0.0.1 that answers as `handle` says (a fake of a Ventros). */
async function fakeServer(handle: (req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; server: Server }> {
  const server = createServer((req, res) => {
    req.resume();
    req.on('end', () => handle(req, res));
  });
  server.listen(0, '127.0.0.1');
  await once(server, 'listening');
  onCleanup(() => {
    server.closeAllConnections();
    return new Promise<void>((r) => server.close(() => r()));
  });
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, server };
}

describe('ventros simulate waha', () => {
  it('posts mixed webhooks at the given rate and prints accepted/failed counts and latency percentiles', async () => {
    const t = await startInbound({ listen: true });
    const ch = await t.createChannel();
    const { code, out } = await simulate(['--channel', ch.id, '--token', ch.token, '--rate', '40', '--duration', '2', '--url', t.running.url!, '--messages-only', '--contacts', '7']);
    expect(code).toBe(0);
    expect(out).toMatch(/sent 80 in \d+\.\d s \(\d+\.\d\/s\), at most \d+\.\d ms behind schedule/);
    expect(out).toMatch(/accepted 80, failed 0 {2}\(by status: 200: 80\)/);
    expect(out).toMatch(/latency ms \(accepted, from the time each was due\): p50 \d+\.\d {2}p90 \d+\.\d {2}p99 \d+\.\d {2}max \d+\.\d/);
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])) === 80, '80 messages stored', 60_000);
    const types = (await t.db.query('SELECT DISTINCT type FROM messages WHERE channel_id = $1', [ch.id])).rows.map((r) => r.type);
    expect(types.length).toBeGreaterThan(2);
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE project_id = $1', [t.projectId])).toBe(7);
    expect(await count(t.db, 'SELECT 1 FROM parse_errors')).toBe(0);
  }, 120_000);

  it('never gives a channel a webhook token that starts with `-`, which a command line takes for an option', () => {
    // The first test above failed when the channel's random token began with `-` (1 in 64).
    for (let i = 0; i < 5000; i++) expect(newWebhookToken()).toMatch(/^[A-Za-z0-9_][A-Za-z0-9_-]{31}$/);
  });

  it('signs every webhook with --hmac-key; a channel with an hmac key is refused up front without one, and a wrong key shows in the first failure', async () => {
    const t = await startInbound({ listen: true });
    const ch = await t.createChannel({ hmac_key: 'shared-hmac-secret' });
    const url = t.running.url!;
    vi.stubEnv('VENTROS_API_KEY', t.key); // the token, the type and the hmac key's presence come from the API
    try {
      const unsigned = await simulate(['--channel', ch.id, '--url', url, '--rate', '20', '--duration', '0.5', '--messages-only']);
      expect(unsigned.code).toBe(2);
      expect(unsigned.err).toContain('has an hmac_key');
      const signed = await simulate(['--channel', ch.id, '--url', url, '--rate', '20', '--duration', '0.5', '--messages-only', '--hmac-key', 'shared-hmac-secret']);
      expect(signed.out).toMatch(/accepted 10, failed 0/);
      expect(signed.code).toBe(0);
    } finally {
      vi.unstubAllEnvs();
    }
    const wrong = await simulate(['--channel', ch.id, '--token', ch.token, '--url', url, '--rate', '20', '--duration', '0.5', '--messages-only', '--hmac-key', 'not-the-key']);
    expect(wrong.code).toBe(1);
    expect(wrong.out).toMatch(/accepted 0, failed 10 {2}\(by status: 401: 10\)/);
    expect(wrong.out).toMatch(/first failure: 401: .*X-Webhook-Hmac missing or wrong/);
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [ch.id])) === 10, 'the 10 signed messages stored', 60_000);
  }, 120_000);

  it('refuses a channel that is not a WAHA one, and an API that cannot be reached, in one line', async () => {
    const t = await startInbound({ listen: true });
    const cloud = await t.api('POST', '/channels', {
      name: 'cloud', type: 'whatsapp_cloud',
      config: { phone_number_id: '100200300', access_token: 'cloud-token', app_secret: 'cloud-secret', verify_token: 'verify-me' },
    });
    expect(cloud.status).toBe(201);
    vi.stubEnv('VENTROS_API_KEY', t.key);
    try {
      const r = await simulate(['--channel', cloud.json.id, '--url', t.running.url!]);
      expect(r.code).toBe(2);
      expect(r.err).toBe(`ventros simulate: channel ${cloud.json.id} is a whatsapp_cloud channel; only WAHA channels can be simulated`);
      const missing = await simulate(['--channel', '0190aaaa-0000-7000-8000-000000000000', '--url', t.running.url!]);
      expect(missing.code).toBe(2);
      expect(missing.err).toMatch(/^ventros simulate: GET \/channels\/0190aaaa-0000-7000-8000-000000000000 answered 404: /);
      // A port nothing listens on (a server just closed).
      const closed = await fakeServer((_req, res) => res.end());
      await new Promise<void>((r) => closed.server.close(() => r()));
      const dead = await simulate(['--channel', cloud.json.id, '--url', closed.url]);
      expect(dead.code).toBe(1);
      expect(dead.err).toMatch(/^ventros simulate: cannot reach http:\/\/127\.0\.0\.1:\d+: .*ECONNREFUSED/);
    } finally {
      vi.unstubAllEnvs();
    }
  }, 60_000);

  it('counts the time a held-back webhook waited in its latency, and says how far sending fell behind', async () => {
    // One request at a time, each answered after 100 ms, against a schedule of one every 25 ms:
    // the sends fall further behind each time. Timed from when each went out, every latency
    // would be about 100 ms; from when each was due, the last ones waited most of a second.
    const slow = await fakeServer((_req, res) => setTimeout(() => res.writeHead(200).end('{}'), 100));
    const r = await runLoad({ url: slow.url, rate: 40, durationS: 0.25, maxInflight: 1, body: () => '{}' });
    expect(r.sent).toBe(10);
    expect(r.accepted).toBe(10);
    expect(r.latencies[0]).toBeGreaterThanOrEqual(95);
    expect(r.latencies[9]).toBeGreaterThanOrEqual(9 * 100 - 9 * 25); // the 10th went out ≥ 675 ms late, then took 100 ms
    expect(r.maxLagMs).toBeGreaterThanOrEqual(9 * 100 - 9 * 25 - 5);
    expect(r.sendS).toBeGreaterThanOrEqual(0.9); // ten sends took at least 900 ms, not the 250 ms scheduled
  }, 30_000);

  it('fails a webhook that is never answered as a timeout, ends the run, and stops sending when interrupted', async () => {
    const silent = await fakeServer(() => {}); // takes every request and never answers
    const timedOut = await runLoad({ url: silent.url, rate: 20, durationS: 0.2, timeoutMs: 300, body: () => '{}' });
    expect(timedOut).toMatchObject({ sent: 4, accepted: 0, failed: 4, byStatus: { timeout: 4 }, latencies: [], interrupted: false });
    expect(timedOut.firstFailure).toMatch(/^timeout: /);

    const stop = new AbortController();
    let answered = 0;
    const ok = await fakeServer((_req, res) => res.writeHead(200).end('{}'));
    const cut = await runLoad({
      url: ok.url, rate: 50, durationS: 60, signal: stop.signal, body: () => '{}',
      onResponse: () => {
        if (++answered === 5) stop.abort();
      },
    });
    expect(cut.interrupted).toBe(true);
    expect(cut.planned).toBe(3000);
    expect(cut.sent).toBeGreaterThanOrEqual(5);
    expect(cut.sent).toBeLessThan(500); // far short of the 3,000 planned (a late loop may send a burst before it sees the abort)
    expect(cut.accepted).toBe(cut.sent);
  }, 30_000);

  it('gives each contact one engine, its acks and reactions that of their message, and every message as message.any', () => {
    const gen = makeWahaGenerator({ contacts: 6 });
    const engineOf = new Map<string, string>();
    const kinds = new Set<string>();
    for (let i = 0; i < 600; i++) {
      const g = gen.next();
      const body = g.body as { event: string; engine: string; payload: { from: string; to: string; fromMe?: boolean } };
      kinds.add(g.kind);
      const parsed = parseWahaEvent(body); // throws on a malformed one
      expect(parsed.map((e) => e.kind), `${g.kind} in ${body.engine}: ${JSON.stringify(parsed)}`).toEqual([{ ack: 'status', reaction: 'reaction' }[g.kind] ?? 'message']);
      if (g.kind !== 'ack' && g.kind !== 'reaction') expect(body.event).toBe('message.any');
      const contact = body.payload.fromMe && g.kind !== 'ack' ? body.payload.to : body.payload.from; // an ack's `from` is the contact's chat
      const seen = engineOf.get(contact);
      if (seen) expect(body.engine, `${g.kind} to/from ${contact}`).toBe(seen);
      else engineOf.set(contact, body.engine);
    }
    expect(new Set(engineOf.values())).toEqual(new Set(['GOWS', 'NOWEB', 'WEBJS']));
    expect(kinds).toEqual(new Set(['text', 'image', 'voice', 'document', 'location', 'contact', 'from_me', 'ack', 'reaction']));
  });

  it('names the flag that is wrong', async () => {
    const cases: Array<[string[], RegExp]> = [
      [['--channel', 'c', '--rate', '0x10'], /--rate must be a number of webhooks per second above 0 and at most 100000 \(got "0x10"\)/],
      [['--channel', 'c', '--rate', 'Infinity'], /--rate must be .* \(got "Infinity"\)/],
      [['--channel', 'c', '--duration', '1e9'], /--duration must be a number of seconds above 0 and at most 86400 \(got "1e9"\)/],
      [['--channel', 'c', '--contacts', '2.5'], /--contacts must be a whole number of senders above 0/],
      [['--channel', 'c', '--timeout', '0'], /--timeout must be a number of seconds above 0/],
      [['--channel', 'c', '--url', 'localhost:8080'], /--url must be an http\(s\) URL such as http:\/\/127\.0\.0\.1:8080 \(got "localhost:8080"\)/],
      [['--channel', 'c', '--token='], /--token must not be empty/],
      [['--rate', '10'], /--channel is required/],
    ];
    for (const [args, message] of cases) {
      const r = await simulate(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err, args.join(' ')).toMatch(message);
    }
  });

  it('fails with a usage message on bad arguments', async () => {
    const err = vi.spyOn(console, 'error').mockImplementation(() => {});
    try {
      expect(await runSimulate(['waha', '--rate', '10'])).toBe(2);
      expect(await runSimulate(['telegram'])).toBe(2);
      // A value that starts with `-` must be given as --token=<value>; said, not thrown.
      expect(await runSimulate(['waha', '--channel', 'c', '--token', '-abc'])).toBe(2);
      expect(await runSimulate(['waha', '--bogus'])).toBe(2);
    } finally {
      err.mockRestore();
    }
  });
});
