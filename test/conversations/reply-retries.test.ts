// Replies are retried on their own schedule (REPLY_RETRY_DELAYS), longer by default than the
// consumers' (CONSUMER_RETRY_DELAYS): a WAHA restart of a few minutes must not fail the replies
// queued meanwhile. Here the two differ, and the reply follows its own.
import { describe, expect, it } from 'vitest';
import { waitFor } from '../support/env.ts';
import { newPhone } from '../support/phones.ts';
import { events, fakeClock, rows, startFakeWaha, startWorld } from './harness.ts';

describe('the reply retry schedule', () => {
  it('is REPLY_RETRY_DELAYS, not the consumers’ schedule', async () => {
    const world = await startWorld({ clock: fakeClock(), env: { CONSUMER_RETRY_DELAYS: '100ms,200ms', REPLY_RETRY_DELAYS: '50ms,50ms,50ms,50ms' } });
    const waha = await startFakeWaha();
    const channel = await world.createChannel(waha.url);
    const phone = newPhone();
    waha.respond((call) => (call.body?.chatId === `${phone}@c.us` ? { status: 503, body: { message: 'restarting' } } : undefined));
    const r = await world.tenant.api('POST', '/messages', { channel_id: channel.id, type: 'text', phone: `+${phone}`, text: 'Ainda aí?' });
    expect(r.status).toBe(202);
    const m = await waitFor(async () => {
      const [row] = await rows(world.db, 'SELECT * FROM messages WHERE id = $1', [r.json.id]);
      return row.status !== 'queued' ? row : undefined;
    }, 'the reply to end', 30_000);
    expect(m.status).toBe('failed');
    // Four delays, five attempts (the consumers' schedule would have made three).
    expect(waha.calls.filter((c) => c.path === '/api/sendText' && c.body?.chatId === `${phone}@c.us`)).toHaveLength(5);
    expect((await events(world.db, { aggregateId: r.json.id, type: 'message.failed' }))[0].data.error_code).toBe('503');
  });
});
