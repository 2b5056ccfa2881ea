// A webhook that fails on every attempt is dead-lettered for the project's admins to read and
// replay. One Meta app's callback receives the changes of all its numbers (providers.md): what a
// Cloud body carries for another number must not be kept there, as it is not in a parse error —
// another number's change keeps its place, field and number only — while this channel's change is
// kept whole, so a replay once the fault is gone stores it. A WAHA body is kept byte for byte.
import { describe, expect, it } from 'vitest';
import { Queues } from '../../src/broker/topology.ts';
import type { Database, Queryable } from '../../src/db/database.ts';
import { waitFor } from '../support/env.ts';
import { newPhone } from '../support/phones.ts';
import { count, startInbound, wahaText } from '../inbound/harness.ts';
import { cloudText, createCloudChannel, postCloud, wamid } from './harness.ts';

const OTHER_NUMBER_ID = '200000000000999'; // the channel's is the harness's PHONE_NUMBER_ID
/** Statements naming these (the message ids below) fail, as a fault no retry mends would. */
const poisoned = new Set<string>();
/** Whether a statement's parameters (strings, or lists of them) name a poisoned id. */
function names(params: readonly unknown[] = []): boolean {
  const texts = params.flatMap((p) => (Array.isArray(p) ? p : [p])).filter((p): p is string => typeof p === 'string');
  return texts.some((text) => [...poisoned].some((id) => text.includes(id)));
}

function poisoning(db: Database): Database {
  const view = Object.create(db) as Database;
  const guard = (q: Queryable): Queryable['query'] =>
    ((sql: string, params?: readonly unknown[]) => (names(params) ? Promise.reject(new Error('a fault no retry mends (test)')) : q.query(sql, params))) as Queryable['query'];
  view.query = guard(db);
  view.transaction = ((fn: (tx: Queryable) => Promise<unknown>, setup?: string) =>
    db.transaction((tx) => fn({ query: guard(tx), exec: (sql: string) => tx.exec(sql) } as Queryable), setup)) as Database['transaction'];
  return view;
}

// Three attempts, 50 and 100 ms apart.
const t = await startInbound({ retryDelaysMs: [50, 100], wrapDb: poisoning });
const channel = await createCloudChannel(t.api);

async function deadLetterOf(messageId: string): Promise<{ id: string; body: string; body_encoding: string }> {
  // Found by its body (not by a statement naming the poisoned id, which would fail here too).
  const row = await waitFor(async () => {
    const r = await t.db.query<{ id: string; body: Uint8Array }>('SELECT id::text AS id, body FROM dead_letters WHERE queue = $1', [Queues.inboundRaw]);
    return r.rows.find((d) => Buffer.from(d.body).toString('utf8').includes(messageId));
  }, 'the webhook dead-lettered', 30_000);
  const got = await t.api('GET', `/admin/dead-letters/${row.id}`);
  expect(got.status).toBe(200);
  return got.json;
}

describe('a webhook dead-lettered on the raw queue', () => {
  it("keeps of a Cloud body this number's change whole and another number's only in place, and replays into this number's message", async () => {
    const mine = newPhone();
    const theirs = newPhone();
    const ours = cloudText(mine, 'Quero trocar o pedido', { name: 'Cliente Daqui' });
    const other = cloudText(theirs, 'Segredo de outra empresa', { name: 'Cliente de Outro Número' });
    const otherChange = { field: 'messages', value: { ...other.body.entry[0].changes[0].value, metadata: { display_phone_number: '5511911111111', phone_number_id: OTHER_NUMBER_ID } } };
    const body = { ...ours.body, entry: [{ ...ours.body.entry[0], changes: [ours.body.entry[0].changes[0], otherChange] }] };
    poisoned.add(ours.msg.id);
    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);

    const dl = await deadLetterOf(ours.msg.id);
    expect(dl.body_encoding).toBe('utf8');
    expect(dl.body).not.toContain('Segredo');
    expect(dl.body).not.toContain(theirs);
    expect(JSON.parse(dl.body)).toEqual({
      ...body,
      entry: [{ ...body.entry[0], changes: [body.entry[0].changes[0], { field: 'messages', value: { metadata: { phone_number_id: OTHER_NUMBER_ID } } }] }],
    });
    expect(await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1', [channel.id])).toBe(0);

    // The fault mended, the replay stores this number's message, and nothing of the other's.
    poisoned.delete(ours.msg.id);
    expect((await t.api('POST', `/admin/dead-letters/${dl.id}/replay`)).status).toBe(202);
    await waitFor(async () => (await count(t.db, 'SELECT 1 FROM messages WHERE channel_id = $1 AND external_id = $2', [channel.id, ours.msg.id])) === 1, 'the replayed message stored');
    expect(await count(t.db, 'SELECT 1 FROM messages WHERE external_id = $1', [other.msg.id])).toBe(0);
    // The same look finds this number's customer, so finding none of the other's means something.
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE phone = $1', [`+${mine}`])).toBe(1);
    expect(await count(t.db, 'SELECT 1 FROM contacts WHERE phone = $1', [`+${theirs}`])).toBe(0);
  });

  it('keeps a Cloud body with nothing of another number byte for byte, as it keeps a WAHA body', async () => {
    const waha = await t.createChannel();
    const wahaId = `3EB0${wamid('w').slice(6, 26).toUpperCase()}`;
    const wahaRaw = JSON.stringify(wahaText(newPhone(), 'Olá, tudo bem?', { id: wahaId }), null, 1); // spacing a re-encoding would lose
    poisoned.add(wahaId);
    expect((await t.post(waha, wahaRaw)).status).toBe(200);

    const only = cloudText(newPhone(), 'Só deste número');
    const cloudRaw = JSON.stringify(only.body, null, 2);
    poisoned.add(only.msg.id);
    expect((await postCloud(t.app, channel.id, cloudRaw)).status).toBe(200);

    expect((await deadLetterOf(wahaId)).body).toBe(wahaRaw);
    expect((await deadLetterOf(only.msg.id)).body).toBe(cloudRaw);
  });
});
