// Replying through WAHA: POST /messages → queued (202) → the sender calls a fake WAHA server (a real
// HTTP server the test scripts) → sent with the provider id, or retried, or failed with WAHA's
// reason. WAHA's echo of the message comes back through the real ingress and must not duplicate it.
import { describe, expect, it } from 'vitest';
import { PROJECT_HEADER } from '../../src/broker/broker.ts';
import { Queues } from '../../src/broker/topology.ts';
import { MAX_RETRY_AFTER_MS } from '../../src/channels/sender.consumer.ts';
import { CHANNEL_CHANGES } from '../../src/db/channels.sql.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { wahaMessageKey } from '../../src/inbound/waha/waha-jid.ts';
import { inboundEventsTotal } from '../../src/observability/metrics.ts';
import { makeOutboundMessages } from '../../src/services/outbound-messages.service.ts';
import { waitFor } from '../support/env.ts';
import { events, fakeClock, rows, sentId, startFakeWaha, startWorld, wahaAck, wahaMessage, type WahaCall } from './harness.ts';
import { newPhone } from '../support/phones.ts';

// The sweeper's clock stays at T0: these conversations happen in real time and must not time out.
const world = await startWorld({ clock: fakeClock() });
const { db, tenant } = world;
const waha = await startFakeWaha();
const channel = await world.createChannel(waha.url);


async function message(id: string): Promise<any> {
  return (await rows(db, 'SELECT * FROM messages WHERE id = $1', [id]))[0];
}

async function send(body: Record<string, unknown>): Promise<string> {
  const r = await tenant.api('POST', '/messages', { channel_id: channel.id, type: 'text', ...body });
  expect(r.status, JSON.stringify(r.json)).toBe(202);
  expect(r.json.status).toBe('queued');
  return r.json.id;
}

const settled = (id: string) => waitFor(async () => {
  const m = await message(id);
  return m.status !== 'queued' ? m : undefined;
}, `message ${id} to leave queued`);

const sends = (phone: string) => waha.calls.filter((c: WahaCall) => c.path.startsWith('/api/send') && c.body?.chatId === `${phone}@c.us`);

async function duplicates(): Promise<number> {
  const m = await inboundEventsTotal.get();
  return m.values.filter((v) => v.labels.result === 'duplicate').reduce((a, v) => a + v.value, 0);
}

/** Runs `run` while the fake WAHA answers with `answer` (then back to its defaults). */
async function answering(answer: Parameters<typeof waha.respond>[0], run: () => Promise<void>): Promise<void> {
  waha.respond(answer);
  try {
    await run();
  } finally {
    waha.respond(() => undefined);
  }
}

/**
 * Runs `run` while the fake WAHA holds every send to `phone` unanswered until `release()` (then
 * answers as usual); released in any case when `run` ends, so no request is left hanging.
 */
async function holding(phone: string, run: (release: () => void) => Promise<void>): Promise<void> {
  let release!: () => void;
  const released = new Promise<void>((resolve) => (release = resolve));
  await answering(async (call) => {
    if (call.body?.chatId === `${phone}@c.us`) await released;
    return undefined;
  }, async () => {
    try {
      await run(release);
    } finally {
      release();
    }
  });
}

/**
 * A customer's message 10 s ago on a channel of its own with an hour's session timeout (so only a
 * close ends the session): the channel, the phone and the session it opened.
 */
async function customerAsked(text: string) {
  const patient = await world.createChannel(waha.url, { session_timeout_minutes: 60 });
  const phone = newPhone();
  await world.postWebhook(patient, wahaMessage(phone, text, { ts: Math.floor(Date.now() / 1000) - 10 }));
  const [s] = await waitFor(async () => {
    const r = await rows(db, `SELECT s.* FROM sessions s JOIN contacts k ON k.id = s.contact_id WHERE s.channel_id = $1 AND k.phone = $2`, [patient.id, `+${phone}`]);
    return r.length ? r : undefined;
  }, 'the customer’s session');
  return { patient, phone, s };
}

/**
 * A reply to the customer of `customerAsked`, held at WAHA: `run` gets its id once WAHA has the
 * request, and `release` to let WAHA answer it.
 */
async function replyHeld(
  asked: Awaited<ReturnType<typeof customerAsked>>,
  text: string,
  run: (id: string, release: () => void) => Promise<void>,
): Promise<void> {
  await holding(asked.phone, async (release) => {
    const id = await send({ channel_id: asked.patient.id, contact_id: asked.s.contact_id, text });
    await waitFor(() => sends(asked.phone).length === 1, 'the reply at WAHA');
    await run(id, release);
  });
}

describe('POST /messages through WAHA', () => {
  it('sends a text with the channel credentials and stores the provider id', async () => {
    const phone = newPhone();
    const id = await send({ phone: `+${phone}`, text: 'Olá! Seu pedido saiu.' });
    const m = await settled(id);
    expect(m.status).toBe('sent');
    const [call] = sends(phone);
    expect(call.method).toBe('POST');
    expect(call.path).toBe('/api/sendText');
    expect(call.headers['x-api-key']).toBe('waha-secret-key');
    expect(call.headers['content-type']).toMatch(/application\/json/);
    expect(call.body).toEqual({ session: 'loja', chatId: `${phone}@c.us`, text: 'Olá! Seu pedido saiu.' });
    expect(m.external_id).toMatch(new RegExp(`^true_${phone}@c\\.us_3EB0`));
    const sent = await events(db, { aggregateId: id, type: 'message.sent' });
    expect(sent).toHaveLength(1);
    expect(sent[0].data).toMatchObject({ message_id: id, direction: 'outbound', status: 'sent', external_id: m.external_id });
    // phone → a new contact (contact.created), and the reply counts on an (opened) session.
    expect(await events(db, { aggregateId: m.contact_id, type: 'contact.created' })).toHaveLength(1);
    const [s] = await rows(db, 'SELECT * FROM sessions WHERE id = $1', [m.session_id]);
    expect(s).toMatchObject({ messages_from_agent: 1, messages_from_contact: 0, status: 'active' });
  });

  it("recognises WAHA's echo by id (either form): one message, not two; acks then move it forward", async () => {
    const phone = newPhone();
    const id = await send({ phone: `+${phone}`, text: 'Pode confirmar?' });
    const m = await settled(id);
    const key = wahaMessageKey(m.external_id);
    for (const echoId of [key, m.external_id]) {
      const before = await duplicates();
      await world.postWebhook(channel, wahaMessage(phone, 'Pode confirmar?', { id: echoId, fromMe: true, ts: Math.floor(Date.now() / 1000) }));
      await waitFor(async () => (await duplicates()) > before, 'the processor to see the echo as a duplicate');
    }
    expect(await rows(db, 'SELECT id FROM messages WHERE channel_id = $1 AND external_key = $2', [channel.id, key])).toEqual([{ id }]);
    const [s] = await rows(db, 'SELECT * FROM sessions WHERE id = $1', [m.session_id]);
    expect(s.messages_from_agent).toBe(1);

    await world.postWebhook(channel, wahaAck(phone, m.external_id, 2));
    await waitFor(async () => (await message(id)).status === 'delivered', 'delivered');
    await world.postWebhook(channel, wahaAck(phone, key, 3));
    const read = await waitFor(async () => ((await message(id)).status === 'read' ? message(id) : undefined), 'read');
    expect(read.delivered_at).not.toBeNull();
    expect((await events(db, { aggregateId: id })).map((e) => e.type)).toEqual(['message.sent', 'message.delivered', 'message.read']);
  });

  it('folds an echo that arrived before WAHA answered into the queued message', async () => {
    const phone = newPhone();
    const provided = sentId(`${phone}@c.us`);
    await answering(async (call) => {
      if (!call.path.startsWith('/api/send') || call.body?.chatId !== `${phone}@c.us`) return undefined;
      // WAHA posts the echo first; it is stored as a message typed on the phone, then WAHA answers.
      await world.postWebhook(channel, wahaMessage(phone, 'Corrida', { id: wahaMessageKey(provided), fromMe: true, ts: Math.floor(Date.now() / 1000) }));
      await waitFor(async () => (await rows(db, 'SELECT 1 FROM messages WHERE channel_id = $1 AND external_key = $2', [channel.id, wahaMessageKey(provided)])).length, 'the echo stored');
      return { status: 201, body: { id: { _serialized: provided } } };
    }, async () => {
      const id = await send({ phone: `+${phone}`, text: 'Corrida' });
      const m = await settled(id);
      expect(m).toMatchObject({ status: 'sent', external_id: provided });
      expect(await rows(db, 'SELECT id FROM messages WHERE channel_id = $1 AND external_key = $2', [channel.id, wahaMessageKey(provided)])).toEqual([{ id }]);
      const [s] = await rows(db, 'SELECT * FROM sessions WHERE id = $1', [m.session_id]);
      expect(s.messages_from_agent).toBe(1);
    });
  });

  it('keeps the failure of an echo that arrived failed before WAHA answered', async () => {
    const phone = newPhone();
    const provided = sentId(`${phone}@c.us`);
    await answering(async (call) => {
      if (!call.path.startsWith('/api/send') || call.body?.chatId !== `${phone}@c.us`) return undefined;
      const echo = wahaMessage(phone, 'Não foi', { id: wahaMessageKey(provided), fromMe: true, ts: Math.floor(Date.now() / 1000) });
      echo.payload.ack = -1;
      echo.payload.ackName = 'ERROR';
      await world.postWebhook(channel, echo);
      await waitFor(async () => (await rows(db, 'SELECT 1 FROM messages WHERE channel_id = $1 AND external_key = $2', [channel.id, wahaMessageKey(provided)])).length, 'the echo stored');
      return { status: 201, body: { id: { _serialized: provided } } };
    }, async () => {
      const id = await send({ phone: `+${phone}`, text: 'Não foi' });
      await waitFor(async () => (await rows(db, 'SELECT 1 FROM messages WHERE id = $1 AND external_id IS NOT NULL', [id])).length, 'the answer recorded');
      const [m] = await rows(db, 'SELECT status, failed_at FROM messages WHERE id = $1', [id]);
      // Before: 'sent', failed_at empty — the status went back from failed (subscribers had message.failed).
      expect({ status: m.status, failed: m.failed_at !== null }).toEqual({ status: 'failed', failed: true });
      // The reply's own id, the one subscribers keep, has its message.sent and then its message.failed.
      const types = (await rows(db, `SELECT type FROM outbox WHERE aggregate_id = $1 AND type LIKE 'message.%' ORDER BY seq`, [id])).map((r) => r.type);
      expect(types).toEqual(['message.sent', 'message.failed']);
      const [failed] = await events(db, { aggregateId: id, type: 'message.failed' });
      expect(failed.data).toMatchObject({ message_id: id, status: 'failed', previous_status: 'sent' });
    });
  });

  it('retries when WAHA answers 500, then succeeds', async () => {
    const phone = newPhone();
    await answering((call) => (call.body?.chatId === `${phone}@c.us` && sends(phone).length === 1 ? { status: 500, body: { message: 'engine restarting' } } : undefined), async () => {
      const id = await send({ phone: `+${phone}`, text: 'Tentando de novo' });
      const m = await settled(id);
      expect(m.status).toBe('sent');
      expect(m.send_attempts).toBe(2);
      expect(sends(phone)).toHaveLength(2);
      expect(await events(db, { aggregateId: id, type: 'message.failed' })).toHaveLength(0);
    });
  });

  it('retries when WAHA answers 422 because its session is still starting, then succeeds', async () => {
    const phone = newPhone();
    // WAHA's answer while a session restarts (its SessionManager checks the status before sending).
    const notReady = { error: 'Session status is not as expected. Try again later or restart the session', session: 'loja', status: 'STARTING', expected: ['WORKING'] };
    await answering((call) => (call.body?.chatId === `${phone}@c.us` && sends(phone).length === 1 ? { status: 422, body: notReady } : undefined), async () => {
      const id = await send({ phone: `+${phone}`, text: 'Depois do reinício' });
      const m = await settled(id);
      // Before: failed at once, with "Session status is not as expected".
      expect({ status: m.status, attempts: m.send_attempts, sends: sends(phone).length }).toEqual({ status: 'sent', attempts: 2, sends: 2 });
    });
  });

  it('retries when WAHA answers 404 because its session is stopped, then succeeds', async () => {
    const phone = newPhone();
    // WAHA's answer for a session it does not have running (stopped, or not restored yet after a restart).
    const stopped = { statusCode: 404, message: "We didn't find a session with name 'loja'.\nPlease start it first by using POST /api/sessions/loja/start request", error: 'Not Found' };
    await answering((call) => (call.body?.chatId === `${phone}@c.us` && sends(phone).length === 1 ? { status: 404, body: stopped } : undefined), async () => {
      const id = await send({ phone: `+${phone}`, text: 'Quando voltar' });
      const m = await settled(id);
      expect({ status: m.status, attempts: m.send_attempts, sends: sends(phone).length }).toEqual({ status: 'sent', attempts: 2, sends: 2 });
    });
  });

  it("ends failed with WAHA's reason on a 4xx, without retrying", async () => {
    const phone = newPhone();
    await answering((call) => (call.body?.chatId === `${phone}@c.us` ? { status: 422, body: { statusCode: 422, message: 'chatId is not on WhatsApp' } } : undefined), async () => {
      const id = await send({ phone: `+${phone}`, text: 'Alguém aí?' });
      const m = await settled(id);
      expect(m.status).toBe('failed');
      expect(m.failed_at).not.toBeNull();
      expect(m.error.message).toContain('chatId is not on WhatsApp');
      expect(sends(phone)).toHaveLength(1);
      const [failed] = await events(db, { aggregateId: id, type: 'message.failed' });
      expect(failed.data).toMatchObject({ message_id: id, status: 'failed', previous_status: 'queued', error_code: '422' });
      expect(failed.data.error).toContain('chatId is not on WhatsApp');
      expect(await events(db, { aggregateId: id, type: 'message.sent' })).toHaveLength(0);
    });
  });

  it('counts its sends by outcome and code, and shows the queued replies and the oldest one’s age at /metrics', async () => {
    const scrape = async () => (await world.app.inject({ method: 'GET', url: '/metrics' })).body;
    const sample = (text: string, name: string) => Number(new RegExp(`^${name.replace(/[{}"=,]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)?.[1] ?? 0);
    const sent = 'outbound_sends_total{provider="waha",result="sent",code="none"}';
    const failed = 'outbound_sends_total{provider="waha",result="failed",code="422"}';
    const before = await scrape();

    const phone = newPhone();
    await holding(phone, async (release) => {
      const id = await send({ phone: `+${phone}`, text: 'Segura aí' });
      await waitFor(() => sends(phone).length === 1, 'the reply at WAHA');
      // Gauges are read at most every 5 s: wait for a reading that includes it.
      await waitFor(async () => sample(await scrape(), 'outbound_queued') >= 1, 'outbound_queued to show the held reply', 15_000);
      expect(sample(await scrape(), 'outbound_oldest_queued_seconds')).toBeGreaterThan(0);
      release();
      expect((await settled(id)).status).toBe('sent');
    });
    const refused = newPhone();
    await answering((call) => (call.body?.chatId === `${refused}@c.us` ? { status: 422, body: { message: 'no' } } : undefined), async () => {
      expect((await settled(await send({ phone: `+${refused}`, text: 'x' }))).status).toBe('failed');
    });

    const after = await scrape();
    expect(sample(after, sent) - sample(before, sent)).toBe(1);
    expect(sample(after, failed) - sample(before, failed)).toBe(1);
    expect(after).toMatch(/^outbound_send_duration_seconds_count\{provider="waha"\} \d+$/m);
  });

  it("keeps the channel's secrets out of a reason that repeats them", async () => {
    const phone = newPhone();
    const echoed = { statusCode: 401, message: 'Invalid API key waha-secret-key for session loja' };
    await answering((call) => (call.body?.chatId === `${phone}@c.us` ? { status: 401, body: echoed } : undefined), async () => {
      const id = await send({ phone: `+${phone}`, text: 'Oi' });
      const m = await settled(id);
      expect(m.status).toBe('failed');
      expect(m.error.message).toContain('Invalid API key [redacted] for session loja');
      const [failed] = await events(db, { aggregateId: id, type: 'message.failed' });
      expect(JSON.stringify(failed.data)).not.toContain('waha-secret-key');
      expect(JSON.stringify(m)).not.toContain('waha-secret-key');
    });
  });

  it("keeps a reason holding U+0000 as storable text: the message still ends failed, with WAHA's words", async () => {
    const phone = newPhone();
    await answering((call) => (call.body?.chatId === `${phone}@c.us` ? { status: 422, body: { statusCode: 422, message: 'bad\u0000number' } } : undefined), async () => {
      const id = await send({ phone: `+${phone}`, text: 'Oi' });
      const m = await settled(id);
      expect(m.status).toBe('failed');
      expect(m.error.message).toContain('bad\ufffdnumber');
    });
  });

  it('sends nothing more to a contact deleted while its message waited for a retry', async () => {
    const phone = newPhone();
    // The first attempt fails; before answering it, the contact is deleted through the API.
    await answering(async (call) => {
      if (call.body?.chatId !== `${phone}@c.us`) return undefined;
      const [k] = await rows(db, 'SELECT id FROM contacts WHERE phone = $1', [`+${phone}`]);
      expect((await tenant.api('DELETE', `/contacts/${k.id}`)).status).toBe(204);
      return { status: 500, body: { message: 'engine restarting' } };
    }, async () => {
      const id = await send({ phone: `+${phone}`, text: 'Ainda aí?' });
      const m = await settled(id);
      expect(m.status).toBe('failed');
      expect(m.error).toMatchObject({ code: 'contact_deleted' });
      expect(sends(phone)).toHaveLength(1);
      expect(await events(db, { aggregateId: id, type: 'message.sent' })).toHaveLength(0);
      expect((await events(db, { aggregateId: id, type: 'message.failed' }))[0].data.error_code).toBe('contact_deleted');
    });
  });

  it('ends failed after the last retry when WAHA keeps failing', async () => {
    const phone = newPhone();
    await answering((call) => (call.body?.chatId === `${phone}@c.us` ? { status: 503, body: { message: 'busy' } } : undefined), async () => {
      const id = await send({ phone: `+${phone}`, text: 'Insistente' });
      const m = await settled(id);
      expect(m.status).toBe('failed');
      expect(sends(phone)).toHaveLength(3); // CONSUMER_RETRY_DELAYS=100ms,200ms → 3 attempts
      expect((await events(db, { aggregateId: id, type: 'message.failed' }))[0].data.error_code).toBe('503');
    });
  });

  it('sends the replies of one conversation in the order they were queued, though the first is retried', async () => {
    const phone = newPhone();
    // The first reply's first attempt fails; its retry is due 100 ms later. The two queued after it
    // wait for it instead of overtaking it (before: Primeira, Segunda, Terceira, Primeira).
    await answering((call) => (call.body?.chatId === `${phone}@c.us` && call.body?.text === 'Primeira' && sends(phone).length === 1 ? { status: 503, body: { message: 'busy' } } : undefined), async () => {
      const first = await send({ phone: `+${phone}`, text: 'Primeira' });
      const second = await send({ phone: `+${phone}`, text: 'Segunda' });
      const third = await send({ phone: `+${phone}`, text: 'Terceira' });
      for (const id of [first, second, third]) expect((await settled(id)).status).toBe('sent');
      expect(sends(phone).map((c) => c.body.text)).toEqual(['Primeira', 'Primeira', 'Segunda', 'Terceira']);
    });
  });

  it('lets the next reply of a conversation go at once when the one before it fails for good', async () => {
    const phone = newPhone();
    // WAHA answers the first only once the second is queued, so the second is held behind it.
    let secondQueued!: () => void;
    const queuedBehind = new Promise<void>((resolve) => (secondQueued = resolve));
    await answering(async (call) => {
      if (call.body?.chatId !== `${phone}@c.us` || call.body?.text !== 'Vai falhar') return undefined;
      await queuedBehind;
      return { status: 422, body: { statusCode: 422, message: 'bad request' } };
    }, async () => {
      const first = await send({ phone: `+${phone}`, text: 'Vai falhar' });
      await waitFor(() => sends(phone).length === 1, 'the first reply at WAHA');
      const second = await send({ phone: `+${phone}`, text: 'Depois' });
      secondQueued();
      expect((await settled(first)).status).toBe('failed');
      // Woken by the sender that failed the first: the scheduler would only pick it up 5 s after
      // it was queued (its grace for a wake-up that never came), so 3 s tells the two apart.
      const next = await waitFor(async () => {
        const m = await message(second);
        return m.status !== 'queued' ? m : undefined;
      }, 'the next reply sent without the scheduler', 3000);
      expect(next.status).toBe('sent');
      expect(sends(phone).map((c) => c.body.text)).toEqual(['Vai falhar', 'Depois']);
    });
  });

  it('does not hold a conversation back behind another one', async () => {
    const slow = newPhone();
    const other = newPhone();
    // WAHA holds the send to `slow` until told; a reply to someone else goes meanwhile.
    await holding(slow, async (release) => {
      const held = await send({ phone: `+${slow}`, text: 'Devagar' });
      await waitFor(() => sends(slow).length === 1, 'the send to the slow chat under way');
      const quick = await send({ phone: `+${other}`, text: 'Rápido' });
      expect((await settled(quick)).status).toBe('sent');
      expect((await message(held)).status).toBe('queued');
      release();
      expect((await settled(held)).status).toBe('sent');
    });
  });

  it('retries, then fails, a reply whose channel credentials no longer open; the one queued after it is not left waiting', async () => {
    // A channel of its own whose sealed credentials are damaged (as after a SECRET_KEY change
    // without re-entering them): reading it throws before WAHA is asked.
    const broken = await world.createChannel(waha.url);
    const phone = newPhone();
    await db.query(`UPDATE channels SET secrets = 'v1:damaged' WHERE id = $1`, [broken.id]);
    await db.query(`SELECT pg_notify('${CHANNEL_CHANGES}', $1)`, [broken.id]);
    const r = await tenant.api('POST', '/messages', { channel_id: broken.id, type: 'text', phone: `+${phone}`, text: 'Não abre' });
    const after = await tenant.api('POST', '/messages', { channel_id: broken.id, type: 'text', phone: `+${phone}`, text: 'Nem esta' });
    expect([r.status, after.status]).toEqual([202, 202]);
    // Before: the handler threw, the reply stayed queued (taken again every minute, for ever) and
    // held the one queued after it.
    for (const id of [r.json.id, after.json.id]) {
      const m = await settled(id);
      expect({ status: m.status, attempts: m.send_attempts, code: m.error?.code }).toEqual({ status: 'failed', attempts: 3, code: 'internal_error' });
      expect(m.error.message).not.toContain('damaged');
      expect((await events(db, { aggregateId: id, type: 'message.failed' }))[0].data.error_code).toBe('internal_error');
    }
    expect(sends(phone)).toHaveLength(0);
  });

  it("honours a provider's Retry-After only up to 15 minutes: the replies queued after it wait too", async () => {
    const phone = newPhone();
    await answering((call) => (call.body?.chatId === `${phone}@c.us` ? { status: 429, body: { message: 'slow down' }, headers: { 'retry-after': '86400' } } : undefined), async () => {
      const id = await send({ phone: `+${phone}`, text: 'Amanhã?' });
      const m = await waitFor(async () => {
        const x = await message(id);
        return x.send_attempts === 1 && x.send_lease_until === null ? x : undefined;
      }, 'the first attempt recorded with its retry');
      const waitMs = new Date(m.next_send_at).getTime() - new Date(m.updated_at).getTime();
      // Before: a day.
      expect(waitMs).toBeGreaterThan(MAX_RETRY_AFTER_MS - 5000);
      expect(waitMs).toBeLessThanOrEqual(MAX_RETRY_AFTER_MS + 1000);
      expect(m.status).toBe('queued');
      // Not left for other tests' WAHA to answer: it fails for good here.
      await db.query(`UPDATE messages SET status = 'failed', next_send_at = NULL WHERE id = $1`, [id]);
    });
  });

  it('gives a reply up (no_outcome) once senders have taken it more times than its schedule allows without an outcome', async () => {
    const phone = newPhone();
    await holding(phone, async () => {
      const id = await send({ phone: `+${phone}`, text: 'Sem resposta' });
      await waitFor(() => sends(phone).length === 1, 'the send under way at WAHA');
      // As if four more senders had taken it, each stopping before an outcome (their leases ran out).
      await db.query(`UPDATE messages SET send_attempts = 5, send_lease_until = now() - interval '1 second' WHERE id = $1`, [id]);
      const wake = { message_id: id, project_id: tenant.projectId };
      await world.broker.send(Queues.messagesOutbound, [{ messageId: uuidv7(), body: Buffer.from(JSON.stringify(wake)), headers: { [PROJECT_HEADER]: tenant.projectId } }], { timeoutMs: 5000 });
      const m = await settled(id);
      // Before: sent a sixth time (and taken again every minute while no sender got an outcome).
      expect({ status: m.status, attempts: m.send_attempts, code: m.error?.code }).toEqual({ status: 'failed', attempts: 6, code: 'no_outcome' });
      expect(sends(phone)).toHaveLength(1);
    });
  });

  it('sends media by URL with caption and file name, and quotes the message replied to', async () => {
    const phone = newPhone();
    await world.postWebhook(channel, wahaMessage(phone, 'Manda a foto?', { id: 'INBOUNDQUOTE01', ts: Math.floor(Date.now() / 1000) }));
    const [inbound] = await waitFor(async () => {
      const r = await rows(db, 'SELECT id, contact_id FROM messages WHERE channel_id = $1 AND external_id = $2', [channel.id, 'INBOUNDQUOTE01']);
      return r.length ? r : undefined;
    }, 'the inbound message');
    const base = { contact_id: inbound.contact_id };
    const ids = [
      await send({ ...base, type: 'image', media_url: 'https://cdn.example.com/p/photo.jpg', caption: 'Aqui', reply_to: inbound.id }),
      await send({ ...base, type: 'document', media_url: 'https://cdn.example.com/f/123', filename: 'boleto.pdf', caption: 'Boleto' }),
      await send({ ...base, type: 'audio', media_url: 'https://cdn.example.com/a/voz.ogg' }),
      await send({ ...base, type: 'video', media_url: 'https://cdn.example.com/v/demo.mp4', caption: 'Demo' }),
    ];
    for (const id of ids) expect((await settled(id)).status).toBe('sent');
    const byPath = Object.fromEntries(sends(phone).map((c) => [c.path, c.body]));
    const chatId = `${phone}@c.us`;
    expect(byPath['/api/sendImage']).toEqual({
      session: 'loja', chatId, file: { mimetype: 'image/jpeg', filename: 'photo.jpg', url: 'https://cdn.example.com/p/photo.jpg' }, caption: 'Aqui', reply_to: 'INBOUNDQUOTE01',
    });
    expect(byPath['/api/sendFile']).toEqual({
      session: 'loja', chatId, file: { mimetype: 'application/pdf', filename: 'boleto.pdf', url: 'https://cdn.example.com/f/123' }, caption: 'Boleto',
    });
    expect(byPath['/api/sendVoice']).toMatchObject({ session: 'loja', chatId, file: { mimetype: 'audio/ogg; codecs=opus', url: 'https://cdn.example.com/a/voz.ogg' } });
    expect(byPath['/api/sendVideo']).toMatchObject({ session: 'loja', chatId, file: { mimetype: 'video/mp4', url: 'https://cdn.example.com/v/demo.mp4' }, caption: 'Demo' });
    expect((await message(ids[0])).reply_to_external_id).toBe('INBOUNDQUOTE01');
  });

  it('counts 3 customer messages and 2 API replies as 3/2, first response from the first customer message', async () => {
    // A channel of its own with an hour's session timeout: a reply is stamped with the real time it
    // was sent, and with this world's one minute a slow run could find the session overdue by then
    // and count the reply in a new one.
    const patient = await world.createChannel(waha.url, { session_timeout_minutes: 60 });
    const phone = newPhone();
    const now = Math.floor(Date.now() / 1000);
    for (const [i, ago] of [30, 25, 20].entries()) {
      await world.postWebhook(patient, wahaMessage(phone, `pergunta ${i}`, { ts: now - ago }));
    }
    const [c] = await waitFor(async () => {
      const r = await rows(db, `SELECT contact_id FROM messages WHERE channel_id = $1 AND text = 'pergunta 2' AND contact_id IN (SELECT id FROM contacts WHERE phone = $2)`, [patient.id, `+${phone}`]);
      return r.length ? r : undefined;
    }, 'the customer messages');
    await waitFor(async () => (await rows(db, 'SELECT count(*)::int AS n FROM messages WHERE contact_id = $1', [c.contact_id]))[0].n === 3, 'three messages');
    const replies: any[] = [];
    for (const text of ['Oi!', 'Já vejo.']) replies.push(await settled(await send({ channel_id: patient.id, contact_id: c.contact_id, text })));
    const [s] = await rows(db, `SELECT * FROM sessions WHERE contact_id = $1 AND status = 'active'`, [c.contact_id]);
    expect(s).toMatchObject({ message_count: 5, messages_from_contact: 3, messages_from_agent: 2 });
    // From the first customer message (30 s before `now`) to the first reply, as it was sent.
    const firstReplyAt = new Date(replies[0].sent_at);
    expect(new Date(s.first_response_at).getTime()).toBe(firstReplyAt.getTime());
    expect(s.first_response_seconds).toBe(Math.floor((firstReplyAt.getTime() - (now - 30) * 1000) / 1000));
  });

  it('counts a reply on the session a person closed while the reply went out, instead of opening a session for it', async () => {
    // Reply, then resolve: the agent answers and closes the conversation at once.
    const asked = await customerAsked('Pode me ajudar?');
    const { s } = asked;
    await replyHeld(asked, 'Resolvido, obrigado!', async (id, release) => {
      expect((await tenant.api('POST', `/sessions/${s.id}/close`, { reason: 'resolved' })).status).toBe(200);
      release();
      expect((await settled(id)).session_id).toBe(s.id);
    });
    // Before: a second session, opened by the reply alone and active for an hour, with its own
    // session.started.
    const all = await rows(db, 'SELECT * FROM sessions WHERE contact_id = $1', [s.contact_id]);
    expect(all.map((x) => ({ id: x.id, status: x.status, end_reason: x.end_reason, message_count: x.message_count, from_agent: x.messages_from_agent }))).toEqual([
      { id: s.id, status: 'ended', end_reason: 'resolved', message_count: 2, from_agent: 1 },
    ]);
    expect(all[0].first_response_seconds).toBeGreaterThanOrEqual(10);
    // Found again with the reply: the customer waited from their message to it.
    expect(all[0].customer_wait_seconds).toBeGreaterThanOrEqual(10);
    const started = (await events(db, { type: 'session.started' })).filter((e) => e.data.contact_id === s.contact_id);
    expect(started).toHaveLength(1);
    const [k] = await rows(db, 'SELECT total_sessions FROM contacts WHERE id = $1', [s.contact_id]);
    expect(k.total_sessions).toBe(1);
  });

  it("records a reply that was out when its LID-only contact was merged into the phone's on the merged contact and conversation", async () => {
    const patient = await world.createChannel(waha.url, { session_timeout_minutes: 60 });
    const phone = newPhone();
    const lid = `9${phone}`;
    const now = Math.floor(Date.now() / 1000);
    const made = await tenant.api('POST', '/contacts', { phone: `+${phone}` });
    expect(made.status).toBe(201);
    const phoneContact = made.json.id as string;
    /** A message from the LID, naming the phone too when `withPhone`. */
    const fromLid = (text: string, ts: number, withPhone: boolean) => {
      const b = wahaMessage(phone, text, { ts });
      b.payload.from = b.payload._data.Info.Chat = b.payload._data.Info.Sender = `${lid}@lid`;
      if (withPhone) b.payload._data.Info.SenderAlt = `${phone}@s.whatsapp.net`;
      return b;
    };
    await world.postWebhook(patient, fromLid('Oi, vi o site', now - 10, false));
    const [lidSession] = await waitFor(async () => {
      const r = await rows(db, 'SELECT s.* FROM sessions s JOIN contacts k ON k.id = s.contact_id WHERE s.channel_id = $1 AND k.wa_lid = $2', [patient.id, `${lid}@lid`]);
      return r.length ? r : undefined;
    }, "the LID-only contact's session");
    const lidOnly = lidSession.contact_id as string;
    expect(lidOnly).not.toBe(phoneContact);

    // The reply goes to the LID; WAHA holds it while a message naming both merges the contacts.
    let release!: () => void;
    const released = new Promise<void>((resolve) => (release = resolve));
    await answering(async (call) => {
      if (call.body?.chatId === `${lid}@lid`) await released;
      return undefined;
    }, async () => {
      try {
        const id = await send({ channel_id: patient.id, contact_id: lidOnly, text: 'Olá! Como posso ajudar?' });
        await waitFor(() => waha.calls.some((c: WahaCall) => c.body?.chatId === `${lid}@lid`), 'the reply at WAHA');
        await world.postWebhook(patient, fromLid('Meu número é este', now - 5, true));
        await waitFor(async () => (await rows(db, 'SELECT merged_into FROM contacts WHERE id = $1', [lidOnly]))[0].merged_into === phoneContact, 'the merge');
        release();
        expect(await settled(id)).toMatchObject({ status: 'sent', contact_id: phoneContact, session_id: lidSession.id });
      } finally {
        release();
      }
    });
    // Counted where the conversation is now; nothing opened on the contact merged away.
    expect(await rows(db, 'SELECT id FROM sessions WHERE contact_id = $1', [lidOnly])).toEqual([]);
    const [s] = await rows(db, 'SELECT contact_id, message_count, messages_from_agent FROM sessions WHERE id = $1', [lidSession.id]);
    expect(s).toMatchObject({ contact_id: phoneContact, message_count: 3, messages_from_agent: 1 });
    const [k] = await rows(db, 'SELECT total_messages, total_sessions FROM contacts WHERE id = $1', [phoneContact]);
    expect(k).toMatchObject({ total_messages: 3, total_sessions: 1 });
    // A reply to the old id now says where the person went.
    const late = await tenant.api('POST', '/messages', { channel_id: patient.id, type: 'text', contact_id: lidOnly, text: 'Ainda aí?' });
    expect(late.status).toBe(404);
    expect(late.json.detail).toBe(`contact not found: it was merged into contact ${phoneContact}`);
  });

  it('opens a new session for a reply that goes out after the closed session would have timed out', async () => {
    const asked = await customerAsked('Ainda aí?');
    const { s } = asked;
    await replyHeld(asked, 'Desculpe a demora', async (id, release) => {
      // The reply was written 90 minutes ago, in a conversation quiet since two hours ago (due an
      // hour ago), and has waited since; a person closes the session now, which ends it at its due
      // time, after the reply was written and before it goes out — as the sweeper would have.
      await db.query(`UPDATE sessions SET last_activity_at = now() - interval '2 hours', due_at = now() - interval '1 hour' WHERE id = $1`, [s.id]);
      await db.query(`UPDATE messages SET created_at = now() - interval '90 minutes' WHERE id = $1`, [id]);
      expect((await tenant.api('POST', `/sessions/${s.id}/close`, { reason: 'resolved' })).status).toBe(200);
      release();
      const m = await settled(id);
      expect(m.session_id).not.toBe(s.id);
    });
    const [old] = await rows(db, 'SELECT message_count, messages_from_agent FROM sessions WHERE id = $1', [s.id]);
    expect(old).toEqual({ message_count: 1, messages_from_agent: 0 });
  });

  it('does not count a reply on its closed session once another session of the conversation came after it', async () => {
    const asked = await customerAsked('Primeira conversa');
    const { patient, phone, s } = asked;
    await replyHeld(asked, 'Resposta atrasada', async (id, release) => {
      expect((await tenant.api('POST', `/sessions/${s.id}/close`, { reason: 'resolved' })).status).toBe(200);
      // The customer writes again (a second session), which is closed too, before the reply goes.
      // (Stamped a second ahead: WAHA's whole seconds must not fall inside the closed session.)
      await world.postWebhook(patient, wahaMessage(phone, 'Segunda conversa', { ts: Math.ceil(Date.now() / 1000) + 1 }));
      const [later] = await waitFor(async () => {
        const r = await rows(db, `SELECT id FROM sessions WHERE contact_id = $1 AND id <> $2`, [s.contact_id, s.id]);
        return r.length ? r : undefined;
      }, 'the second session');
      expect((await tenant.api('POST', `/sessions/${later.id}/close`, { reason: 'resolved' })).status).toBe(200);
      release();
      const m = await settled(id);
      expect([s.id, later.id]).not.toContain(m.session_id);
    });
    const [first] = await rows(db, 'SELECT message_count, messages_from_agent FROM sessions WHERE id = $1', [s.id]);
    expect(first).toEqual({ message_count: 1, messages_from_agent: 0 });
  });

  it('opens a new session for a reply queued after the person closed the last one', async () => {
    const { s } = await customerAsked('Obrigado!');
    const patient = { id: s.channel_id };
    expect((await tenant.api('POST', `/sessions/${s.id}/close`, { reason: 'resolved' })).status).toBe(200);
    // Written after the close: a new conversation started by us.
    const m = await settled(await send({ channel_id: patient.id, contact_id: s.contact_id, text: 'Uma pesquisa rápida?' }));
    expect(m.session_id).not.toBe(s.id);
    const [again] = await rows(db, 'SELECT * FROM sessions WHERE id = $1', [m.session_id]);
    expect(again).toMatchObject({ status: 'active', message_count: 1, messages_from_agent: 1 });
    const [old] = await rows(db, 'SELECT message_count FROM sessions WHERE id = $1', [s.id]);
    expect(old.message_count).toBe(1);
  });

  it("quotes by our id only a message of the same conversation, never another customer's", async () => {
    const [a, b] = [newPhone(), newPhone()];
    await world.postWebhook(channel, wahaMessage(a, 'Pergunta de A', { id: 'QUOTE_OF_A_01', ts: Math.floor(Date.now() / 1000) }));
    const [fromA] = await waitFor(async () => {
      const r = await rows(db, 'SELECT id, contact_id FROM messages WHERE channel_id = $1 AND external_id = $2', [channel.id, 'QUOTE_OF_A_01']);
      return r.length ? r : undefined;
    }, "A's message");
    const toB = await tenant.api('POST', '/messages', { channel_id: channel.id, phone: `+${b}`, type: 'text', text: 'Oi B', reply_to: fromA.id });
    expect(toB.status).toBe(422);
    expect(toB.json.detail).toMatch(/conversation/);
    expect(sends(b)).toHaveLength(0);
    // To A it quotes.
    const m = await settled(await send({ channel_id: channel.id, contact_id: fromA.contact_id, text: 'Respondendo', reply_to: fromA.id }));
    expect(m.reply_to_external_id).toBe('QUOTE_OF_A_01');
  });

  it("quotes by a provider's id we have stored only a message of the same conversation; one we do not know goes as given", async () => {
    const [a, b] = [newPhone(), newPhone()];
    await world.postWebhook(channel, wahaMessage(a, 'Outra pergunta de A', { id: 'QUOTEOFA02', ts: Math.floor(Date.now() / 1000) }));
    await waitFor(async () => (await rows(db, 'SELECT 1 FROM messages WHERE channel_id = $1 AND external_id = $2', [channel.id, 'QUOTEOFA02'])).length > 0, "A's message");
    // As stored, and in WAHA's serialized form naming the chat.
    for (const replyTo of ['QUOTEOFA02', `false_${a}@c.us_QUOTEOFA02`]) {
      const toB = await tenant.api('POST', '/messages', { channel_id: channel.id, phone: `+${b}`, type: 'text', text: 'Oi B', reply_to: replyTo });
      expect(toB.status, replyTo).toBe(422);
      expect(toB.json.errors).toEqual([{ field: 'reply_to', message: 'another conversation' }]);
    }
    expect(sends(b)).toHaveLength(0);
    const toA = await settled(await send({ phone: `+${a}`, text: 'Respondendo A', reply_to: `false_${a}@c.us_QUOTEOFA02` }));
    expect(toA.reply_to_external_id).toBe(`false_${a}@c.us_QUOTEOFA02`);
    const unknown = await settled(await send({ phone: `+${b}`, text: 'Sobre a sua mensagem', reply_to: 'NEVERSEEN99' }));
    expect(unknown.reply_to_external_id).toBe('NEVERSEEN99');
  });

  it('validates the request: one recipient, text for text, media for media, the caller’s own channel', async () => {
    const phone = `+${newPhone()}`;
    const bad = async (body: Record<string, unknown>, key?: string) => (await tenant.api('POST', '/messages', { channel_id: channel.id, ...body }, key)).status;
    expect(await bad({ type: 'text', text: 'x' })).toBe(400);
    expect(await bad({ type: 'text', phone, contact_id: '0193a0a0-0000-7000-8000-000000000000', text: 'x' })).toBe(400);
    expect(await bad({ type: 'text', phone })).toBe(400);
    expect(await bad({ type: 'image', phone })).toBe(400);
    expect(await bad({ type: 'image', phone, media_url: 'file:///etc/passwd' })).toBe(400);
    // A media message's caption: one of caption and text, at most 1,024 characters, none on audio.
    const media = { phone, media_url: 'https://cdn.example.com/p/photo.jpg' };
    expect(await bad({ type: 'image', ...media, caption: 'a', text: 'b' })).toBe(400);
    expect(await bad({ type: 'image', ...media, text: 'x'.repeat(1025) })).toBe(400);
    expect(await bad({ type: 'audio', ...media, caption: 'ouça' })).toBe(400);
    expect(await bad({ type: 'audio', ...media, text: 'ouça' })).toBe(400);
    const other = await world.register();
    expect(await bad({ type: 'text', phone, text: 'x' }, other.key)).toBe(404);
  });
});

describe('a WAHA media_url where private addresses are allowed (the default)', () => {
  // WAHA fetches the URL from inside our network: a LAN address is its owner's choice, a cloud
  // metadata address never is (it would send the instance's credentials to the chosen chat).
  it('refuses a link-local or metadata address, as a literal or by name, and takes a LAN one', async () => {
    const phone = `+${newPhone()}`;
    const send = (media_url: string) => tenant.api('POST', '/messages', { channel_id: channel.id, type: 'image', phone, media_url });
    for (const url of ['http://169.254.169.254/latest/meta-data/iam/security-credentials/x', 'http://[fe80::1]/x.png', 'http://100.100.100.200/latest/meta-data/']) {
      const r = await send(url);
      expect(r.status, url).toBe(400);
      expect(r.json.errors).toEqual([{ field: 'media_url', message: 'not a public address' }]);
      expect(r.json.detail).toMatch(/^media_url names .*, a link-local or cloud metadata address/);
    }
    expect((await send('http://10.0.0.5/foto.png')).status).toBe(202);

    // By name: a resolver that answers the metadata address for it.
    const outbound = makeOutboundMessages({ db, broker: world.broker, resolve: async (host) => (host === 'metadata.internal' ? [{ address: '169.254.169.254', family: 4 }] : [{ address: '10.0.0.7', family: 4 }]) });
    const caller = { kind: 'api_key' as const, projectId: tenant.projectId, role: 'admin' as const };
    const input = { channelId: channel.id, phone, type: 'image' as const };
    await expect(outbound.queue(caller, { ...input, mediaUrl: 'http://metadata.internal/computeMetadata/v1/' })).rejects.toMatchObject({
      errors: [{ field: 'media_url', message: 'not a public address' }],
      detail: expect.stringMatching(/^media_url names metadata\.internal, a link-local/),
    });
    expect((await outbound.queue(caller, { ...input, mediaUrl: 'http://files.lan/foto.png' })).status).toBe('queued');
  });
});

describe('channel operations against WAHA', () => {
  it('registers our webhook URL, token and events on the WAHA session', async () => {
    const r = await tenant.api('POST', `/channels/${channel.id}/configure-webhook`);
    expect(r.status, JSON.stringify(r.json)).toBe(200);
    const put = waha.calls.filter((c) => c.method === 'PUT').at(-1)!;
    expect(put.path).toBe('/api/sessions/loja');
    expect(put.headers['x-api-key']).toBe('waha-secret-key');
    const [hook] = put.body.config.webhooks;
    expect(hook.url).toBe(`https://crm.example.test/api/v1/webhooks/waha/${channel.id}?token=${encodeURIComponent(channel.token)}`);
    expect(hook.events).toEqual(expect.arrayContaining(['message.any', 'message.ack', 'session.status']));
  });

  it('refreshes the channel status from the WAHA session state', async () => {
    let state = 'SCAN_QR_CODE';
    await answering((call) => (call.method === 'GET' && call.path === '/api/sessions/loja' ? { status: 200, body: { name: 'loja', status: state } } : undefined), async () => {
      const first = await tenant.api('POST', `/channels/${channel.id}/refresh`);
      expect(first.json).toMatchObject({ status: 'connecting', provider_status: 'SCAN_QR_CODE', changed: true });
      state = 'WORKING';
      expect((await tenant.api('POST', `/channels/${channel.id}/refresh`)).json).toMatchObject({ status: 'active', previous_status: 'connecting', changed: true });
      expect((await tenant.api('POST', `/channels/${channel.id}/refresh`)).json).toMatchObject({ status: 'active', changed: false });
      expect((await tenant.api('GET', `/channels/${channel.id}`)).json.status).toBe('active');
      const changes = await events(db, { aggregateId: channel.id, type: 'channel.status_changed' });
      expect(changes.map((e) => e.data.status)).toEqual(['connecting', 'active']);
    });
  });
});
