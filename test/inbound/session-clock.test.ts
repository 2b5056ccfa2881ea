// The inbound transaction against what a processor may not know yet, or a provider's clock:
// - a session opens with its channel's timeout as committed, not as a processor's channel cache
//   last heard it, and each message renews it with the timeout in force (migration 035);
// - a message dated a few minutes ahead does not end a session before it is due;
// - a message delivered late does not set the contact's name back to an older push name.
import { describe, expect, it } from 'vitest';
import { parseWahaEvent } from '../../src/inbound/waha/waha.parser.ts';
import { makeInboundService, type InboundChannel } from '../../src/services/inbound.service.ts';
import { newPhone } from '../support/phones.ts';
import { startInbound, wahaText } from './harness.ts';

const t = await startInbound({ role: 'api' });
const service = makeInboundService({ db: t.db });

/** The channel as a processor holds it: `sessionTimeoutMinutes` is what its cache says. */
async function channelSeenAs(sessionTimeoutMinutes: number, own?: number): Promise<InboundChannel> {
  const ch = await t.createChannel({}, own === undefined ? {} : { session_timeout_minutes: own });
  return { id: ch.id, projectId: t.projectId, name: 'c', type: 'waha', sessionTimeoutMinutes };
}

async function store(channel: InboundChannel, body: unknown): Promise<void> {
  const [result] = await service.apply(t.projectId, [{ channel, events: parseWahaEvent(body), receivedAt: new Date() }]);
  expect(result).toEqual({});
}

const sessionsOf = async (channelId: string) =>
  (await t.db.query<{ status: string; timeout_minutes: number; due_at: Date; last_activity_at: Date; message_count: number }>(
    'SELECT status, timeout_minutes, due_at, last_activity_at, message_count FROM sessions WHERE channel_id = $1 ORDER BY started_at', [channelId],
  )).rows;

const named = (phone: string, name: string, ts: number) => {
  const body = wahaText(phone, `de ${name}`, { ts });
  body.payload._data.Info.PushName = name;
  return body;
};

describe('a session timeout in force', () => {
  it("opens a session with the channel's timeout as committed, whatever the processor's cache says", async () => {
    // The channel's timeout was changed to 30; this processor has not heard it yet (1440).
    const channel = await channelSeenAs(1440, 30);
    const ts = Math.floor(Date.now() / 1000) - 60;
    await store(channel, wahaText(newPhone(), 'oi', { ts }));
    const [s] = await sessionsOf(channel.id);
    expect(s.timeout_minutes).toBe(30);
    expect(new Date(s.due_at).getTime()).toBe((ts + 30 * 60) * 1000);
  });

  it("places a late message with the channel's timeout as committed: its own ended session, not the active one hours later", async () => {
    const phone = newPhone();
    const channel = await channelSeenAs(1440, 30);
    const now = Math.floor(Date.now() / 1000);
    await store(channel, wahaText(phone, 'agora', { ts: now - 60 }));
    // Three hours before the active session: within the cache's 1440 minutes, not within 30.
    await store(channel, wahaText(phone, 'de manhã', { ts: now - 3 * 3600 }));
    const sessions = await sessionsOf(channel.id);
    expect(sessions.map((s) => [s.status, s.timeout_minutes, s.message_count])).toEqual([['ended', 30, 1], ['active', 30, 1]]);
  });

  it('renews a session with the timeout in force: a restart with another default reaches it at its next message', async () => {
    const phone = newPhone();
    const channel = await channelSeenAs(1440); // no timeout of its own: the deployment default
    const ts = Math.floor(Date.now() / 1000) - 120;
    await store(channel, wahaText(phone, 'antes', { ts }));
    expect((await sessionsOf(channel.id))[0].timeout_minutes).toBe(1440);
    // Restarted with SESSION_TIMEOUT_MINUTES=30: the next message renews the session with 30.
    await store({ ...channel, sessionTimeoutMinutes: 30 }, wahaText(phone, 'depois', { ts: ts + 60 }));
    const sessions = await sessionsOf(channel.id);
    expect(sessions).toHaveLength(1);
    expect(sessions[0]).toMatchObject({ status: 'active', timeout_minutes: 30, message_count: 2 });
    expect(new Date(sessions[0].due_at).getTime()).toBe((ts + 60 + 30 * 60) * 1000);
  });
});

describe('a message dated ahead', () => {
  it('does not end a session before it is due', async () => {
    const phone = newPhone();
    const channel = await channelSeenAs(30);
    const now = Math.floor(Date.now() / 1000);
    // Due in a minute; then a message whose clock runs four minutes fast (accepted: up to five).
    await store(channel, wahaText(phone, 'primeira', { ts: now - 29 * 60 }));
    await store(channel, wahaText(phone, 'relógio adiantado', { ts: now + 4 * 60 }));
    const sessions = await sessionsOf(channel.id);
    expect(sessions, JSON.stringify(sessions)).toHaveLength(1);
    expect(sessions[0]).toMatchObject({ status: 'active', message_count: 2 });
  });

  it('still ends a session that is overdue by the clock (a backlog after an outage)', async () => {
    const phone = newPhone();
    const channel = await channelSeenAs(30);
    const now = Math.floor(Date.now() / 1000);
    await store(channel, wahaText(phone, 'antiga', { ts: now - 40 * 60 }));
    await store(channel, wahaText(phone, 'nova', { ts: now - 60 }));
    expect((await sessionsOf(channel.id)).map((s) => s.status)).toEqual(['ended', 'active']);
  });
});

describe('a push name delivered late', () => {
  it("does not set the contact's name back to the one an older message carried", async () => {
    const phone = newPhone();
    const channel = await channelSeenAs(30);
    const ts = Math.floor(Date.now() / 1000) - 600;
    await store(channel, named(phone, 'Joana Prado', ts));
    await store(channel, named(phone, 'Joana', ts - 300)); // sent before, delivered after
    const contact = async () => (await t.db.query<{ id: string; name: string }>('SELECT id, name FROM contacts WHERE project_id = $1 AND phone = $2', [t.projectId, `+${phone}`])).rows[0];
    expect((await contact()).name).toBe('Joana Prado');
    const updates = await t.db.query("SELECT 1 FROM outbox WHERE aggregate_id = $1 AND type = 'contact.updated'", [(await contact()).id]);
    expect(updates.rows).toHaveLength(0);
    // A newer one still renames them.
    await store(channel, named(phone, 'Joana P.', ts + 60));
    expect((await contact()).name).toBe('Joana P.');
    // A contact with no name yet takes one from a late message too.
    const other = newPhone();
    const nameless = wahaText(other, 'sem nome', { ts });
    delete nameless.payload._data.Info.PushName;
    await store(channel, nameless);
    await store(channel, named(other, 'Bia', ts - 300));
    expect((await t.db.query('SELECT name FROM contacts WHERE project_id = $1 AND phone = $2', [t.projectId, `+${other}`])).rows[0].name).toBe('Bia');
  });
});
