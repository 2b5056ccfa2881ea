// Pipelines: ordered statuses, moving contacts through them (history with who and when, events),
// and the choreographed entry of new contacts into the default pipeline (contact.created → consumer).
import { describe, expect, it } from 'vitest';
import { pipelineEntryHandler } from '../../src/consumers/pipeline-entry.consumer.ts';
import { eventMessageBody } from '../../src/outbox/idempotent.ts';
import { toEnvelope } from '../../src/outbox/outbox.sql.ts';
import { countingDb } from '../support/counting-db.ts';
import { waitFor } from '../support/env.ts';
import { events, rows, startWorld, wahaMessage, type Tenant } from './harness.ts';
import { newPhone as phone } from '../support/phones.ts';

const world = await startWorld();
const { db, tenant } = world;

const newPhone = () => `+${phone('31')}`;

async function newContact(t: Tenant = tenant): Promise<string> {
  const r = await t.api('POST', '/contacts', { phone: newPhone() });
  expect(r.status, JSON.stringify(r.json)).toBe(201);
  return r.json.id;
}

async function newPipeline(t: Tenant = tenant, name = 'Suporte'): Promise<any> {
  const r = await t.api('POST', '/pipelines', {
    name,
    description: 'Atendimento',
    statuses: [
      { name: 'Aberto', kind: 'open' },
      { name: 'Em atendimento', kind: 'active' },
      { name: 'Resolvido', kind: 'closed' },
    ],
  });
  expect(r.status, JSON.stringify(r.json)).toBe(201);
  return r.json;
}

describe('pipelines', () => {
  it('creates a pipeline with ordered statuses, lists and reads it', async () => {
    const p = await newPipeline();
    expect(p).toMatchObject({ name: 'Suporte', description: 'Atendimento', is_default: false });
    expect(p.statuses.map((s: any) => [s.name, s.kind, s.position])).toEqual([['Aberto', 'open', 0], ['Em atendimento', 'active', 1], ['Resolvido', 'closed', 2]]);
    const list = await tenant.api('GET', '/pipelines');
    expect(list.json.data.map((x: any) => x.name)).toEqual(expect.arrayContaining(['Sales', 'Suporte']));
    expect(list.json.data.find((x: any) => x.name === 'Sales').is_default).toBe(true);
    expect((await tenant.api('GET', `/pipelines/${p.id}`)).json).toEqual(p);
    const [created] = await events(db, { aggregateId: p.id, type: 'pipeline.created' });
    expect(created.data.statuses.map((s: any) => s.name)).toEqual(['Aberto', 'Em atendimento', 'Resolvido']);
  });

  it('renames, inserts a status in place and moves the default', async () => {
    const p = await newPipeline(tenant, 'Vendas B2B');
    const added = await tenant.api('POST', `/pipelines/${p.id}/statuses`, { name: 'Proposta', kind: 'active', position: 1 });
    expect(added.status).toBe(201);
    expect(added.json.statuses.map((s: any) => s.name)).toEqual(['Aberto', 'Proposta', 'Em atendimento', 'Resolvido']);
    expect((await tenant.api('POST', `/pipelines/${p.id}/statuses`, { name: 'proposta', kind: 'active' })).status).toBe(400);

    const renamed = await tenant.api('PATCH', `/pipelines/${p.id}`, { name: 'B2B', is_default: true });
    expect(renamed.json).toMatchObject({ name: 'B2B', is_default: true });
    const all = (await tenant.api('GET', '/pipelines')).json.data;
    expect(all.filter((x: any) => x.is_default).map((x: any) => x.id)).toEqual([p.id]);
    const project = (await rows(db, 'SELECT settings FROM projects WHERE id = $1', [tenant.projectId]))[0];
    expect(project.settings.default_pipeline_id).toBe(p.id);
    expect((await tenant.api('PATCH', `/pipelines/${p.id}`, { is_default: false })).status).toBe(400);
    // Put the registration default back for the tests below.
    const sales = all.find((x: any) => x.name === 'Sales');
    expect((await tenant.api('PATCH', `/pipelines/${sales.id}`, { is_default: true })).json.is_default).toBe(true);
  });

  it('records moves in order with who, when and notes, and emits contact.status_changed', async () => {
    const p = await newPipeline();
    const contactId = await newContact();
    const [open, active, closed] = p.statuses;
    const move = (status: any, notes?: string) => tenant.api('PUT', `/contacts/${contactId}/pipeline-status`, { pipeline_id: p.id, status_id: status.id, notes });

    const first = await move(open);
    expect(first.status).toBe(200);
    expect(first.json).toMatchObject({ contact_id: contactId, pipeline_id: p.id, status_id: open.id, previous_status_id: null, changed: true, changed_by_type: 'api_key' });
    await move(active, 'ligou pedindo orçamento');
    await move(closed, 'fechado');
    const same = await move(closed);
    expect(same.json).toMatchObject({ changed: false, changed_at: null });

    const history = await tenant.api('GET', `/contacts/${contactId}/pipeline-history`);
    expect(history.json.data.map((h: any) => [h.previous_status_name, h.status_name, h.notes])).toEqual([
      [null, 'Aberto', null],
      ['Aberto', 'Em atendimento', 'ligou pedindo orçamento'],
      ['Em atendimento', 'Resolvido', 'fechado'],
    ]);
    expect(history.json.data.every((h: any) => h.changed_by_type === 'api_key' && h.changed_by && h.changed_at)).toBe(true);
    const page1 = await tenant.api('GET', `/contacts/${contactId}/pipeline-history?limit=2`);
    const page2 = await tenant.api('GET', `/contacts/${contactId}/pipeline-history?limit=2&cursor=${page1.json.next_cursor}`);
    expect([...page1.json.data, ...page2.json.data].map((h: any) => h.id)).toEqual(history.json.data.map((h: any) => h.id));
    expect(page2.json.next_cursor).toBeNull();

    const changed = await events(db, { aggregateId: contactId, type: 'contact.status_changed' });
    expect(changed.map((e) => [e.data.previous_status_name, e.data.status_name])).toEqual([[null, 'Aberto'], ['Aberto', 'Em atendimento'], ['Em atendimento', 'Resolvido']]);
    expect(changed[1].data).toMatchObject({ pipeline_id: p.id, notes: 'ligou pedindo orçamento', changed_by_type: 'api_key' });
  });

  it('rejects a status of another pipeline or project, and another project’s contact or pipeline', async () => {
    const mine = await newPipeline(tenant, 'Mine');
    const other = await newPipeline(tenant, 'Other');
    const stranger = await world.register();
    const theirs = await newPipeline(stranger, 'Theirs');
    const contactId = await newContact();
    const theirContact = await newContact(stranger);
    const put = (body: Record<string, unknown>, id = contactId, t = tenant) => t.api('PUT', `/contacts/${id}/pipeline-status`, body);

    expect((await put({ pipeline_id: mine.id, status_id: other.statuses[0].id })).status).toBe(422);
    expect((await put({ pipeline_id: mine.id, status_id: theirs.statuses[0].id })).status).toBe(422);
    expect((await put({ pipeline_id: theirs.id, status_id: theirs.statuses[0].id })).status).toBe(404);
    expect((await put({ pipeline_id: mine.id, status_id: mine.statuses[0].id }, theirContact)).status).toBe(404);
    expect((await tenant.api('GET', `/pipelines/${theirs.id}`)).status).toBe(404);
    expect((await tenant.api('GET', `/contacts/${theirContact}/pipeline-history`)).status).toBe(404);
    expect(await events(db, { aggregateId: contactId, type: 'contact.status_changed' })).toHaveLength(0);
    expect((await rows(db, 'SELECT * FROM contact_pipeline_history WHERE contact_id = $1', [contactId]))).toHaveLength(0);
  });
});

describe('new contacts entering the default pipeline (contact.created → pipeline-entry consumer)', () => {
  const handled = async (eventId: string) =>
    (await rows(db, `SELECT 1 FROM processed_events WHERE consumer = 'pipeline-entry' AND event_id = $1`, [eventId])).length > 0;

  it('places a new contact at the first status of the default pipeline when the project asks for it', async () => {
    const t = await world.register();
    expect((await t.api('PATCH', `/projects/${t.projectId}`, { settings: { pipeline_auto_enter: true } })).status).toBe(200);
    const sales = (await t.api('GET', '/pipelines')).json.data.find((p: any) => p.is_default);

    // Through the inbound pipeline: the first message of a new number creates the contact.
    const channel = await world.createChannel('http://127.0.0.1:9', {}, t);
    const phone = newPhone().slice(1);
    await world.postWebhook(channel, wahaMessage(phone, 'Quero comprar', { ts: Math.floor(Date.now() / 1000) }));
    const place = await waitFor(async () => (await rows(db, `SELECT c.* FROM contact_pipeline_statuses c JOIN contacts k ON k.id = c.contact_id WHERE k.phone = $1`, ['+' + phone]))[0], 'the contact to enter the pipeline');
    expect(place).toMatchObject({ pipeline_id: sales.id, status_id: sales.statuses[0].id });
    const [e] = await events(db, { aggregateId: place.contact_id, type: 'contact.status_changed' });
    expect(e.data).toMatchObject({ status_name: 'New', previous_status_id: null, changed_by_type: 'system', changed_by: 'pipeline-entry' });

    // A contact created through the API enters too; one a person already placed stays where it is.
    const apiContact = await newContact(t);
    await waitFor(async () => (await rows(db, 'SELECT 1 FROM contact_pipeline_statuses WHERE contact_id = $1', [apiContact])).length, 'the API contact to enter');
  });

  it('leaves new contacts alone by default, without opening a transaction for them', async () => {
    // The consumer's handler, given this contact's contact.created, with a database that counts
    // transactions: with the setting off it only reads the setting.
    const contactId = await newContact();
    const [row] = await rows(db, 'SELECT * FROM outbox WHERE aggregate_id = $1 AND type = $2', [contactId, 'contact.created']);
    const created = toEnvelope(row);
    const counting = countingDb(db);
    await pipelineEntryHandler(counting.db)({ messageId: created.id, queue: 'test', routingKey: created.type, body: eventMessageBody(created), headers: {}, attempt: 1 });
    expect(counting.counts.transactions).toBe(0);
    expect(await rows(db, 'SELECT 1 FROM contact_pipeline_statuses WHERE contact_id = $1', [contactId])).toHaveLength(0);
    expect(await handled(created.id)).toBe(false);
  });
});
