// The same conversation, driven once through WAHA and once through the Cloud API, must end the same
// way: a session opened, 3 messages from the contact and 2 from the agent counted, the session
// closed for inactivity, and message.received delivered to a webhook subscriber. Only the driver
// knows the provider: WAHA's agent messages are fromMe echoes of messages typed on the phone; the
// Cloud API has no echo, so the agent replies through POST /messages and a fake Graph API.
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { onCleanup, waitFor } from '../support/env.ts';
import { events, rows, startFakeWaha, startWorld, wahaMessage, type FakeClock, type World } from '../conversations/harness.ts';
import { cloudText, createCloudChannel, postCloud, startFakeGraph } from './harness.ts';

type Provider = 'waha' | 'whatsapp_cloud';

type Driver = {
  channelId: string;
  /** A message from the contact, at provider time base + `seconds`. */
  fromContact(phone: string, text: string, seconds: number): Promise<void>;
  /** A message from the agent to the contact. */
  fromAgent(phone: string, contactId: string, text: string, seconds: number): Promise<void>;
};

/** The sweeper's clock, standing at `base()` (unix seconds) until the test moves it. */
function clockAt(base: () => number): FakeClock {
  let offset = 0;
  return { now: () => new Date((base() + offset) * 1000), set: (s) => (offset = s) };
}

async function driverFor(provider: Provider, world: World, base: number): Promise<Driver> {
  if (provider === 'waha') {
    const waha = await startFakeWaha();
    const channel = await world.createChannel(waha.url);
    return {
      channelId: channel.id,
      fromContact: async (phone, text, s) => void (await world.postWebhook(channel, wahaMessage(phone, text, { ts: base + s }))),
      fromAgent: async (phone, _contactId, text, s) => void (await world.postWebhook(channel, wahaMessage(phone, text, { ts: base + s, fromMe: true }))),
    };
  }
  const graph = await startFakeGraph();
  const channel = await createCloudChannel(world.tenant.api, { api_base_url: graph.url });
  return {
    channelId: channel.id,
    async fromContact(phone, text, s) {
      const r = await postCloud(world.app, channel.id, cloudText(phone, text, { ts: base + s, name: 'Cliente' }).body);
      if (r.status !== 200) throw new Error(`Cloud ingress answered ${r.status}`);
    },
    async fromAgent(_phone, contactId, text) {
      const r = await world.tenant.api('POST', '/messages', { channel_id: channel.id, contact_id: contactId, type: 'text', text });
      expect(r.status, JSON.stringify(r.json)).toBe(202);
      await waitFor(async () => (await rows(world.db, 'SELECT status FROM messages WHERE id = $1', [r.json.id]))[0]?.status === 'sent', 'the reply sent', 30_000);
    },
  };
}

/** A webhook subscriber: a local HTTP server that records what it receives. */
async function startReceiver(): Promise<{ url: string; received: any[] }> {
  const received: any[] = [];
  const server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      received.push(JSON.parse(Buffer.concat(chunks).toString('utf8')));
      res.writeHead(200).end();
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.unref();
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}/hook`, received };
}

describe.each<Provider>(['waha', 'whatsapp_cloud'])('a conversation through %s', (provider) => {
  // Provider times near the real clock: a Cloud reply is stamped when Meta accepts it (now), and
  // the conversation must not look hours old next to it. So `base` is taken once this provider's
  // world is up, not when the file is collected: the other provider's half runs first, and with a
  // one-minute session timeout a reply sent over a minute after `base` would find the session
  // overdue and open a new one. Until then the sweeper's clock reads 1970, when nothing is due.
  let base = 0;
  const clock = clockAt(() => base);
  const phone = `55419${String(Date.now() % 1_000_000).padStart(6, '0')}${provider === 'waha' ? '01' : '02'}`;
  let world: World;
  let driver: Driver;
  let receiver: { url: string; received: any[] };
  let contactId: string;

  beforeAll(async () => {
    world = await startWorld({ clock });
    base = Math.floor(Date.now() / 1000);
    driver = await driverFor(provider, world, base);
    receiver = await startReceiver();
    const sub = await world.tenant.api('POST', '/webhook-subscriptions', { url: receiver.url, events: ['message.received', 'session.*'] });
    expect(sub.status, JSON.stringify(sub.json)).toBe(201);
  });
  afterAll(async () => world?.running.stop());

  const session = async () => (await rows(world.db, 'SELECT * FROM sessions WHERE contact_id = $1 ORDER BY started_at', [contactId]))[0];

  it('opens one session and counts 3 messages from the contact and 2 from the agent', async () => {
    await driver.fromContact(phone, 'Oi, tudo bem?', 0);
    const first = await waitFor(async () => (await rows(world.db, 'SELECT * FROM messages WHERE channel_id = $1', [driver.channelId]))[0], 'the first message', 30_000);
    contactId = first.contact_id;
    await driver.fromContact(phone, 'Queria saber do meu pedido', 1);
    await driver.fromAgent(phone, contactId, 'Olá! Já verifico.', 2);
    await driver.fromContact(phone, 'Número 1234', 3);
    await driver.fromAgent(phone, contactId, 'Saiu para entrega hoje.', 4);

    const s = await waitFor(async () => {
      const x = await session();
      return x && x.message_count === 5 ? x : undefined;
    }, 'five messages counted', 30_000);
    expect(s).toMatchObject({ status: 'active', channel_id: driver.channelId, message_count: 5, messages_from_contact: 3, messages_from_agent: 2 });
    expect(await rows(world.db, 'SELECT id FROM sessions WHERE contact_id = $1', [contactId])).toHaveLength(1);
    expect(await events(world.db, { aggregateId: s.id, type: 'session.started' })).toHaveLength(1);
    const api = await world.tenant.api('GET', `/sessions/${s.id}`);
    expect(api.json).toMatchObject({ status: 'active', message_count: 5, messages_from_contact: 3, messages_from_agent: 2 });
    const [c] = await rows(world.db, 'SELECT phone FROM contacts WHERE id = $1', [contactId]);
    expect(c.phone).toBe(`+${phone}`);
  });

  it('delivers message.received to a webhook subscriber', async () => {
    const got = await waitFor(() => {
      const mine = receiver.received.filter((e) => e.type === 'message.received' && e.data?.channel_id === driver.channelId);
      return mine.length === 3 ? mine : undefined;
    }, 'three message.received at the subscriber', 30_000);
    expect(got[0]).toMatchObject({ event: 'message.received', data: { contact_id: contactId, direction: 'inbound' } });
    expect(got.map((e) => e.data.text).sort()).toEqual(['Número 1234', 'Oi, tudo bem?', 'Queria saber do meu pedido']);
  });

  it('closes the session for inactivity', async () => {
    const s = await session();
    // SESSION_TIMEOUT_MINUTES is 1 in this world; ten minutes of silence is well past it.
    clock.set(600);
    const ended = await waitFor(async () => {
      const x = await session();
      return x.status === 'ended' ? x : undefined;
    }, 'the session to end', 30_000);
    expect(ended).toMatchObject({ id: s.id, end_reason: 'inactivity_timeout', message_count: 5, messages_from_contact: 3, messages_from_agent: 2 });
    const [e] = await events(world.db, { aggregateId: s.id, type: 'session.ended' });
    expect(e.data).toMatchObject({ reason: 'inactivity_timeout', messages_from_contact: 3, messages_from_agent: 2 });
    await waitFor(() => receiver.received.some((x) => x.type === 'session.ended' && x.data?.session_id === s.id), 'session.ended at the subscriber', 30_000);
  });
});
