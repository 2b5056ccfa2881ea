// A channel's provider address is its owner's to set, and what the provider answers comes back to
// them (a message's error, a status): with the guard on, calls to a loopback or private address
// never leave, and say why. The fake providers listen on loopback, so they stand for an address
// inside our network.
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { events, rows, startFakeWaha, startWorld } from './harness.ts';
import { createCloudChannel, startFakeGraph } from '../cloud/harness.ts';

const world = await startWorld({ env: { WAHA_ALLOW_PRIVATE_URLS: 'false', CLOUD_API_ALLOW_PRIVATE_URLS: 'false' } });
const { db, tenant } = world;

const failed = (id: string) =>
  waitFor(async () => {
    const [m] = await rows(db, 'SELECT * FROM messages WHERE id = $1', [id]);
    return m.status === 'failed' ? m : undefined;
  }, `message ${id} to fail`, 30_000);

async function reply(channelId: string, phone: string): Promise<string> {
  const r = await tenant.api('POST', '/messages', { channel_id: channelId, type: 'text', phone, text: 'olá' });
  expect(r.status, JSON.stringify(r.json)).toBe(202);
  return r.json.id;
}

describe('calls to a provider on a private address, with the guard on', () => {
  it('WAHA: a reply fails at once without a request, and the refresh and webhook set-up say why', async () => {
    const waha = await startFakeWaha();
    const ch = await world.createChannel(waha.url);
    const id = await reply(ch.id, '+5511966660001');
    const m = await failed(id);
    expect(m.send_attempts).toBe(1); // not retried: it cannot go better later
    const [ev] = await events(db, { aggregateId: id, type: 'message.failed' });
    expect(ev.data).toMatchObject({ error_code: 'blocked_address', error: expect.stringMatching(/base_url .* is a loopback or private address.*WAHA_ALLOW_PRIVATE_URLS=false/) });

    for (const action of ['refresh', 'configure-webhook']) {
      const r = await tenant.api('POST', `/channels/${ch.id}/${action}`);
      expect(r.status, action).toBe(422);
      expect(r.json.detail).toMatch(/loopback or private address/);
    }
    expect(waha.calls).toHaveLength(0);
  });

  it('WAHA: refuses a media_url on a private address, which WAHA would fetch from inside our network', async () => {
    const waha = await startFakeWaha();
    const ch = await world.createChannel(waha.url);
    const send = (media_url: string) => tenant.api('POST', '/messages', { channel_id: ch.id, type: 'image', phone: '+5511966660003', media_url });
    for (const url of ['http://127.0.0.1:8080/admin/export.csv', 'http://10.0.0.5/x.png', 'http://[::1]/x.png', 'http://169.254.169.254/latest/meta-data/']) {
      const r = await send(url);
      expect(r.status, url).toBe(400);
      expect(r.json.errors).toEqual([{ field: 'media_url', message: 'not a public address' }]);
      expect(r.json.detail).toMatch(/WAHA_ALLOW_PRIVATE_URLS=false/);
    }
    expect((await send('https://93.184.216.34/foto.png')).status).toBe(202); // a public address is fine
  });

  it('Cloud API: a reply fails at once without a request, naming the setting that allows it', async () => {
    const graph = await startFakeGraph();
    const ch = await createCloudChannel(tenant.api, { api_base_url: graph.url });
    const id = await reply(ch.id, '+5511966660002');
    await failed(id);
    const [ev] = await events(db, { aggregateId: id, type: 'message.failed' });
    expect(ev.data).toMatchObject({ error_code: 'blocked_address', error: expect.stringMatching(/Graph API address .* loopback or private address.*CLOUD_API_ALLOW_PRIVATE_URLS=true/) });
    expect(graph.sends()).toHaveLength(0);
  });
});
