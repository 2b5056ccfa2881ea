// What Meta refers to that the channel never stored — a status or a reaction for a message sent by
// other means (the App Dashboard, a script, before the channel existed) — is routine on the Cloud
// API: it is retried on the raw queue's schedule, then parked in parse_errors, counted as
// `unknown_target` and acknowledged; it never fills the dead letters. An unreadable item in the
// same body is parked in the same row, with both reasons.
import { describe, expect, it } from 'vitest';
import { Queues } from '../../src/broker/topology.ts';
import { waitFor } from '../support/env.ts';
import { count, inboundCount, startInbound } from '../inbound/harness.ts';
import { cloudBody, cloudStatus, cloudText, createCloudChannel, postCloud, wamid } from './harness.ts';
import { newPhone } from '../support/phones.ts';

// Three attempts, 50 and 100 ms apart.
const t = await startInbound({ retryDelaysMs: [50, 100] });
const channel = await createCloudChannel(t.api);
const phone = () => newPhone();
const parkedRows = () => t.db.query<{ reason: string; event_type: string | null; body: Uint8Array }>('SELECT reason, event_type, body FROM parse_errors WHERE channel_id = $1 ORDER BY created_at', [channel.id]);
const unknownTarget = () => inboundCount({ provider: 'whatsapp_cloud', event: 'webhook', result: 'unknown_target' });

describe('a Cloud webhook naming a message the channel never stored', () => {
  it('is retried, then parked and counted, not dead-lettered; what else it held is stored once', async () => {
    await t.db.query('DELETE FROM parse_errors WHERE channel_id = $1', [channel.id]);
    const before = await unknownTarget();
    const p = phone();
    const kept = cloudText(p, 'Oi, tudo bem?');
    const body = cloudBody({ contacts: [{ profile: { name: 'Cliente' }, wa_id: p }], messages: [kept.msg], statuses: [cloudStatus('wamid.SENT_FROM_THE_DASHBOARD', 'read', p)] });
    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);

    const [parked] = await waitFor(async () => {
      const r = await parkedRows();
      return r.rows.length ? r.rows : undefined;
    }, 'the webhook parked', 30_000);
    expect(parked.reason).toMatch(/does not have \(yet\), after 3 attempts$/);
    // Filed under the change's field: Meta's bodies have no `event`.
    expect(parked.event_type).toBe('messages');
    expect(JSON.parse(Buffer.from(parked.body).toString('utf8'))).toEqual(body);
    expect(await unknownTarget()).toBe(before + 1);
    expect(await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1 AND external_id = $2', [channel.id, kept.msg.id])).toBe(1);
    const dead = (await t.api('GET', '/admin/dead-letters')).json.data.filter((d: any) => d.queue === Queues.inboundRaw);
    expect(dead).toEqual([]);
  });

  it('parks an unreadable item and an unresolved reference of one body together', async () => {
    await t.db.query('DELETE FROM parse_errors WHERE channel_id = $1', [channel.id]);
    const p = phone();
    const unreadable = { id: wamid('bad'), timestamp: '1764460800', type: 'text', text: { body: 'de quem?' } };
    const body = cloudBody({ messages: [unreadable], statuses: [cloudStatus('wamid.NEVER_OURS', 'delivered', p)] });
    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);

    const [parked] = await waitFor(async () => {
      const r = await parkedRows();
      return r.rows.length ? r.rows : undefined;
    }, 'the webhook parked', 30_000);
    expect(parked.reason).toMatch(/does not have \(yet\), after 3 attempts; an item could not be read \(the rest of it was processed\): .*messages\[0\]\.from/);
    expect((await parkedRows()).rows).toHaveLength(1);
  });
});
