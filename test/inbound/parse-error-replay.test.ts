// POST /admin/parse-errors/{id}/replay: a webhook parked in parse_errors goes through the inbound
// processor again. A reaction whose message came after the reaction's retries is applied once the
// message is there; a replay is recorded and a second one asked for (force); a webhook that still
// cannot be read is parked again, as a parse error of its own; another project's is not found.
import { describe, expect, it } from 'vitest';
import { uniqueName, waitFor } from '../support/env.ts';
import { inboundEventsTotal } from '../../src/observability/metrics.ts';
import { count, fixture, messageByKey, startInbound } from './harness.ts';

// Short retries: a reference to a message not stored yet is parked after three attempts.
const t = await startInbound({ retryDelaysMs: [50, 100] });

const parkedOf = (channelId: string) => t.db.query<{ id: string; reason: string; event_type: string | null }>('SELECT id, reason, event_type FROM parse_errors WHERE channel_id = $1 ORDER BY created_at, id', [channelId]);

describe('replaying a parse error', () => {
  it('applies a reaction whose message arrived after its retries, once; a second replay is a 409 unless forced', async () => {
    const ch = await t.createChannel();
    expect((await t.post(ch, fixture('webjs-reaction-add'))).status).toBe(200);
    const parked = await waitFor(async () => (await parkedOf(ch.id)).rows[0], 'the reaction parked', 30_000);
    expect(parked.event_type).toBe('message.reaction');

    // The message it reacts to comes now, long after.
    expect((await t.post(ch, fixture('webjs-from-me'))).status).toBe(200);
    const target = await waitFor(() => messageByKey(t.db, ch.id, '3EB0DEV0000000WEBJS02'), 'the message stored', 30_000);
    expect((await t.api('GET', `/messages/${target.id}`)).json.reactions).toEqual([]);

    const r = await t.api('POST', `/admin/parse-errors/${parked.id}/replay`);
    expect(r.status, JSON.stringify(r.json)).toBe(202);
    expect(r.json).toMatchObject({ id: parked.id, replay_count: 1 });
    const reacted = await waitFor(async () => {
      const m = (await t.api('GET', `/messages/${target.id}`)).json;
      return m.reactions.length > 0 ? m : undefined;
    }, 'the reaction applied', 30_000);
    expect(reacted.reactions).toEqual([{ by: 'contact', emoji: '👍', at: new Date(fixture('webjs-reaction-add').payload.timestamp * 1000).toISOString() }]);
    expect(await count(t.db, "SELECT 1 FROM outbox WHERE aggregate_id = $1 AND type = 'message.reacted'", [target.id])).toBe(1);

    // Shown as replayed; a second replay is refused, a forced one changes nothing more.
    const shown = await t.api('GET', `/admin/parse-errors/${parked.id}`);
    expect(shown.json).toMatchObject({ replay_count: 1 });
    expect(shown.json.replayed_at).toBe(r.json.replayed_at);
    const again = await t.api('POST', `/admin/parse-errors/${parked.id}/replay`);
    expect(again.status).toBe(409);
    expect(again.json.detail).toContain('force=true');
    const reactionsProcessed = async () => (await inboundEventsTotal.get()).values.filter((v) => v.labels.event === 'message.reaction').reduce((a, v) => a + v.value, 0);
    const before = await reactionsProcessed();
    const forced = await t.api('POST', `/admin/parse-errors/${parked.id}/replay?force=true`);
    expect(forced.status).toBe(202);
    expect(forced.json.replay_count).toBe(2);
    // The forced replay went through too (the reaction, again, changes nothing): still one event.
    await waitFor(async () => (await reactionsProcessed()) > before, 'the forced replay processed', 30_000);
    expect(await count(t.db, "SELECT 1 FROM outbox WHERE aggregate_id = $1 AND type = 'message.reacted'", [target.id])).toBe(1);
    expect((await parkedOf(ch.id)).rows).toHaveLength(1);
  });

  it('parks again, as a new parse error, what still cannot be read', async () => {
    const ch = await t.createChannel();
    const body = { event: 'message', session: 'loja-principal', payload: { id: 42, from: [] } };
    expect((await t.post(ch, body)).status).toBe(200);
    const first = await waitFor(async () => (await parkedOf(ch.id)).rows[0], 'parked', 30_000);
    const r = await t.api('POST', `/admin/parse-errors/${first.id}/replay`);
    expect(r.status).toBe(202);
    const rows = await waitFor(async () => {
      const all = (await parkedOf(ch.id)).rows;
      return all.length === 2 ? all : undefined;
    }, 'parked again', 30_000);
    expect(rows[1].reason).toBe(first.reason);
    expect(rows[1].id).not.toBe(first.id);
  });

  it('refuses one whose channel was deleted (422), marking nothing', async () => {
    const ch = await t.createChannel();
    expect((await t.post(ch, { event: 'message', session: 'x', payload: null })).status).toBe(200);
    const parked = await waitFor(async () => (await parkedOf(ch.id)).rows[0], 'parked', 30_000);
    expect((await t.api('DELETE', `/channels/${ch.id}`)).status).toBe(204);
    const r = await t.api('POST', `/admin/parse-errors/${parked.id}/replay`);
    expect(r.status).toBe(422);
    expect(r.json.detail).toContain('deleted');
    expect((await t.api('GET', `/admin/parse-errors/${parked.id}`)).json.replay_count).toBe(0);
  });

  it("is not another project's to replay", async () => {
    const ch = await t.createChannel();
    expect((await t.post(ch, { event: 'message', session: 'x', payload: null })).status).toBe(200);
    const parked = await waitFor(async () => (await parkedOf(ch.id)).rows[0], 'parked', 30_000);
    const name = uniqueName('u');
    const other = await t.api('POST', '/auth/register', { name, email: `${name}@example.com`, password: 'correct horse battery staple' });
    const foreign = await t.api('POST', `/admin/parse-errors/${parked.id}/replay`, undefined, other.json.api_key.key);
    expect(foreign.status).toBe(404);
    expect((await t.api('GET', `/admin/parse-errors/${parked.id}`)).json.replay_count).toBe(0);
  });
});
