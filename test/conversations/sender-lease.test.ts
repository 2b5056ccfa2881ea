// A sender that outlives its lease (a lock wait, a stalled process) and whose reply another sender
// has taken meanwhile: its late failure neither fails the reply under way nor frees the other's
// lease (a third sender could then send beside it). A late success is still recorded.
import { describe, expect, it } from 'vitest';
import { claimForSend, deferSend, takeDueForQueue } from '../../src/db/outbound.sql.ts';
import { makeOutboundMessages } from '../../src/services/outbound-messages.service.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeTestBroker, defaultBrokerKind } from '../support/brokers.ts';
import { makeTestDb } from '../support/env.ts';
import { seedChannel, seedContact, seedMessage } from '../http/seed-conversations.ts';

const { db } = await makeTestDb();
const broker = await makeTestBroker(defaultBrokerKind(), db);
const outbound = makeOutboundMessages({ db, broker });
const projectId = uuidv7();
const channelId = await seedChannel(db, projectId);

async function queuedReply(contactId?: string): Promise<string> {
  contactId ??= await seedContact(db, projectId, { name: 'Ana' });
  const id = await seedMessage(db, { projectId, contactId, channelId, timestamp: new Date().toISOString(), fromMe: true, status: 'queued' });
  await db.query(`UPDATE messages SET next_send_at = now(), sent_at = NULL WHERE id = $1`, [id]);
  return id;
}

/** Two claims of one reply: the first sender's lease ran out and a second one took it. */
async function takenOver(id: string) {
  const first = await claimForSend(db, projectId, id, 60_000);
  if (!first) throw new Error('the first sender should have claimed it');
  await db.query(`UPDATE messages SET send_lease_until = now() - interval '1 second' WHERE id = $1`, [id]);
  const second = await claimForSend(db, projectId, id, 60_000);
  if (!second) throw new Error('the second sender should have claimed it');
  expect(second.attempt).toBe(first.attempt + 1);
  return { first, second };
}

const failure = (code: string | null) => ({ message: 'WAHA said no', code, title: null, details: null });

const state = async (id: string) =>
  (await db.query<{ status: string; leased: boolean }>('SELECT status, send_lease_until > now() AS leased FROM messages WHERE id = $1', [id])).rows[0];

describe('a sender whose lease ran out', () => {
  it('does not fail a reply another sender has taken since', async () => {
    const id = await queuedReply();
    const { first } = await takenOver(id);
    expect(await outbound.recordFailed(first, failure('500'))).toBe(false);
    expect(await state(id)).toEqual({ status: 'queued', leased: true });
  });

  it("does not free the other sender's lease with its retry", async () => {
    const id = await queuedReply();
    const { first } = await takenOver(id);
    await outbound.recordRetry(first, 5000, failure(null));
    expect(await state(id)).toEqual({ status: 'queued', leased: true });
    expect(await claimForSend(db, projectId, id, 60_000)).toBeUndefined();
  });

  it('still fails or retries the reply it holds', async () => {
    const id = await queuedReply();
    const { second } = await takenOver(id);
    expect(await outbound.recordFailed(second, failure('422'))).toBe(true);
    expect((await state(id)).status).toBe('failed');
  });
});

describe('a reply waiting behind an earlier one of its conversation', () => {
  it('is not handed to the queue again and again, nor deferred, until the earlier one is done', async () => {
    const contactId = await seedContact(db, projectId, { name: 'Bia' });
    const first = await queuedReply(contactId);
    const later = await queuedReply(contactId);
    // Both due and handed over long ago (a provider down for a while): only the first is taken.
    await db.query(`UPDATE messages SET enqueued_at = now() - interval '10 minutes' WHERE id = ANY($1::uuid[])`, [[first, later]]);
    const taken = (await takeDueForQueue(db, { limit: 1000, graceMs: 0, staleMs: 60_000 })).map((x) => x.id);
    expect(taken).toContain(first);
    expect(taken).not.toContain(later);
    expect(await deferSend(db, projectId, later, 1000)).toBe(false);
    // The first goes out: the later one is taken (its hand-over is stale, in case the wake-up was lost).
    await db.query(`UPDATE messages SET status = 'sent' WHERE id = $1`, [first]);
    expect((await takeDueForQueue(db, { limit: 1000, graceMs: 0, staleMs: 60_000 })).map((x) => x.id)).toContain(later);
  });
});
