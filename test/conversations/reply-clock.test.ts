// A reply is dated when it is recorded, by the database's clock (the sweeper's), once it holds its
// contact: one that waited behind another transaction while its conversation's session fell due
// and was ended used to carry the time before the wait, and opened a second session that began
// before the first one's end. PostgreSQL only: the wait is a second connection holding a row.
import { describe, expect, it } from 'vitest';
import type { Broker } from '../../src/broker/broker.ts';
import { makeOutboundMessages } from '../../src/services/outbound-messages.service.ts';
import { onServices, waitFor } from '../support/env.ts';
import { holdTransaction, waitUntilBlockedBy } from '../support/held.ts';
import { newPhone } from '../support/phones.ts';
import { T0, fakeClock, rows, startFakeWaha, startWorld, wahaMessage } from './harness.ts';

describe.runIf(onServices)('a reply recorded after waiting for its contact', () => {
  it('is dated after the session the sweeper ended meanwhile, never inside it', async () => {
    const clock = fakeClock();
    const world = await startWorld({ clock });
    const { db, tenant } = world;
    const waha = await startFakeWaha();
    const channel = await world.createChannel(waha.url, { session_timeout_minutes: 1 });
    const phone = newPhone();
    // The contact's message of 55 s ago: its session falls due in about 5 s, in real time.
    expect(await world.postWebhook(channel, wahaMessage(phone, 'Oi, tudo bem?', { ts: Math.floor(Date.now() / 1000) - 55 }))).toBe(200);
    const session = await waitFor(async () => {
      const [s] = await rows(db, 'SELECT s.* FROM sessions s JOIN contacts c ON c.id = s.contact_id WHERE c.phone = $1', [`+${phone}`]);
      return s;
    }, 'the contact\'s session');
    const due = new Date(session.due_at).getTime();

    // Queued with a wake-up that goes nowhere: the test records the send, as a sender would.
    const outbound = makeOutboundMessages({ db, broker: Object.assign(Object.create(world.broker) as Broker, { send: async () => undefined }) });
    const caller = { kind: 'api_key' as const, projectId: tenant.projectId, role: 'admin' as const };
    const queued = await outbound.queue(caller, { channelId: channel.id, contactId: session.contact_id, type: 'text', text: 'Tudo, e você?' });

    // Another transaction holds the contact (an inbound batch, say) while the reply is recorded.
    const holder = holdTransaction(db, (tx) => tx.query('SELECT 1 FROM contacts WHERE id = $1 FOR UPDATE', [session.contact_id]));
    const pid = await holder.pid;
    // Recorded before the session is due, or the test proves nothing (the old code dated the reply
    // with the time it began).
    expect(Date.now(), 'the reply begins to be recorded before its session is due').toBeLessThan(due);
    const recording = outbound.recordSent({ message: queued, attempt: 1, phone: `+${phone}`, waLid: null, contactDeleted: false }, 'true_x@c.us_REPLYCLOCK1', 1);
    await waitUntilBlockedBy(db, pid, 'the reply waiting for its contact');

    // Meanwhile the session falls due and the sweeper ends it, at its due time.
    await waitFor(() => Date.now() > due + 50, 'the session to fall due', 15_000, 50);
    clock.set(Date.now() / 1000 - T0);
    await waitFor(async () => (await rows(db, 'SELECT status FROM sessions WHERE id = $1', [session.id]))[0].status === 'ended', 'the sweeper to end the session');
    holder.release();
    await holder.done;
    expect(await recording).toBe(true);

    const [first, second] = await rows(db, 'SELECT id, started_at, ended_at FROM sessions WHERE contact_id = $1 ORDER BY started_at', [session.contact_id]);
    expect(first.id).toBe(session.id);
    expect(second, 'the reply opens a session of its own').toBeDefined();
    expect(new Date(second.started_at).getTime()).toBeGreaterThanOrEqual(new Date(first.ended_at).getTime());
    const [reply] = await rows(db, 'SELECT session_id, sent_at FROM messages WHERE id = $1', [queued.id]);
    expect(reply.session_id).toBe(second.id);
    expect(new Date(reply.sent_at).getTime()).toBeGreaterThanOrEqual(new Date(first.ended_at).getTime());
  }, 60_000);
});
