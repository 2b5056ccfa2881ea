import { beforeAll, describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { AppError } from '../../src/errors.ts';
import { appendEvents, countPending, listEvents, pruneEvents, type StoredEvent } from '../../src/outbox/outbox.sql.ts';
import { brokerKinds, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, waitFor } from '../support/env.ts';
import { walkCursor } from '../support/paging.ts';
import { contactCreated, relayFor, sessionStarted, startRecorder } from './helpers.ts';

/** Marks the projects' rows published, as the relay would. */
async function publishAll(db: Database, ...projects: string[]): Promise<void> {
  await db.query('UPDATE outbox SET published_at = clock_timestamp() WHERE published_at IS NULL AND project_id = ANY($1::uuid[])', [projects]);
}

describe.each(brokerKinds())('outbox with the %s broker', (kind) => {
  it('publishes nothing for events appended in a transaction that rolls back', async () => {
    const { db } = await makeTestDb();
    const broker = await makeTestBroker(kind, db);
    const rec = await startRecorder(db, broker);
    relayFor({ db, broker, pollMs: 50 });
    const project = uuidv7();

    const rolledBack = [contactCreated(project), sessionStarted(project)];
    await expect(
      withTransaction(db, async (tx) => {
        await appendEvents(tx, rolledBack);
        throw new Error('aggregate write failed');
      }),
    ).rejects.toThrow('aggregate write failed');
    // Committed after the rollback: had the rolled-back rows existed, they would come first.
    const committed = contactCreated(project);
    await withTransaction(db, (tx) => appendEvents(tx, [committed]));

    await waitFor(() => rec.applied.includes(committed.id), 'the committed event to be consumed', 60_000);
    expect(rec.deliveries).toEqual([committed.id]);
    const r = await db.query('SELECT id FROM outbox');
    expect(r.rows.map((x) => x.id)).toEqual([committed.id]);
  }, 120_000);
});

describe('outbox storage and event log', () => {
  // One database for these tests: each works in its own project and looks only at its own rows.
  let db: Database;
  beforeAll(async () => {
    db = (await makeTestDb()).db;
  }, 120_000);

  it('stores a batch of envelopes with one statement, exactly as given', async () => {
    const project = uuidv7();
    const events = [contactCreated(project, { occurredAt: '2024-05-01T10:00:00.123Z' }), sessionStarted(project)];
    const before = await countPending(db);
    await withTransaction(db, (tx) => appendEvents(tx, events));
    expect(await countPending(db)).toBe(before + 2);
    await publishAll(db, project);
    const page = await listEvents(db, { projectId: project, limit: 10 });
    const strip = ({ published_at: _p, ...e }: StoredEvent) => e;
    expect(page.data.map(strip)).toEqual([events[1], events[0]]);
    expect(page.nextCursor).toBeNull();
    expect(await countPending(db)).toBe(before);
  }, 120_000);

  it('lists only published events of the project, newest first, filtered by type, aggregate and time', async () => {
    const [p, other] = [uuidv7(), uuidv7()];
    const at = (min: number) => new Date(Date.UTC(2024, 0, 1, 12, min)).toISOString();
    const contact = uuidv7();
    const evs = [
      contactCreated(p, { occurredAt: at(0), aggregateId: contact }),
      sessionStarted(p),
      contactCreated(p, { occurredAt: at(2) }),
      contactCreated(p, { occurredAt: at(3), aggregateId: contact }),
      contactCreated(other, { occurredAt: at(4) }),
    ];
    evs[1] = { ...evs[1], occurred_at: at(1) };
    await withTransaction(db, (tx) => appendEvents(tx, evs));
    await publishAll(db, p, other);
    const unpublished = contactCreated(p, { occurredAt: at(5) });
    await withTransaction(db, (tx) => appendEvents(tx, [unpublished]));

    const ids = async (q: Partial<Parameters<typeof listEvents>[1]>) =>
      (await listEvents(db, { projectId: p, limit: 50, ...q })).data.map((e) => e.id);
    expect(await ids({})).toEqual([evs[3].id, evs[2].id, evs[1].id, evs[0].id]);
    expect(await ids({ type: 'session.started' })).toEqual([evs[1].id]);
    expect(await ids({ aggregateId: contact })).toEqual([evs[3].id, evs[0].id]);
    expect(await ids({ since: at(1) })).toEqual([evs[3].id, evs[2].id, evs[1].id]);
    expect(await ids({ since: at(1), until: at(3) })).toEqual([evs[2].id, evs[1].id]);
    expect(await ids({ type: 'contact.created', since: new Date(at(1)) })).toEqual([evs[3].id, evs[2].id]);
    await expect(ids({ type: 'contact.exploded' })).rejects.toThrow(AppError);
  }, 120_000);

  it('pages through the log with a cursor, without gaps or repeats, also across equal timestamps', async () => {
    const p = uuidv7();
    const same = '2024-03-01T08:00:00.000Z';
    const evs = [
      ...Array.from({ length: 7 }, (_, i) => contactCreated(p, { occurredAt: new Date(Date.UTC(2024, 1, 1, 0, i)) })),
      ...Array.from({ length: 6 }, () => contactCreated(p, { occurredAt: same })),
    ];
    await withTransaction(db, (tx) => appendEvents(tx, evs));
    await publishAll(db, p);

    const walked = await walkCursor(async (cursor) => {
      const page = await listEvents(db, { projectId: p, limit: 4, cursor });
      return { items: page.data.map((e) => e.id), next: page.nextCursor };
    });
    expect(walked.largest).toBeLessThanOrEqual(4);
    const { items: seen, pages } = walked;
    const expected = [...evs].sort((a, b) => (a.occurred_at === b.occurred_at ? (a.id < b.id ? 1 : -1) : a.occurred_at < b.occurred_at ? 1 : -1)).map((e) => e.id);
    expect(seen).toEqual(expected);
    expect(pages).toBe(4);
    await expect(listEvents(db, { projectId: p, limit: 4, cursor: 'not-a-cursor' })).rejects.toThrow(/cursor/);
  }, 120_000);

  it('prunes published events past retention in batches and never touches unpublished ones', async () => {
    const p = uuidv7();
    const old = Array.from({ length: 7 }, () => contactCreated(p, { occurredAt: '2020-01-01T00:00:00Z' }));
    const recent = Array.from({ length: 2 }, () => contactCreated(p));
    const owed = Array.from({ length: 3 }, () => contactCreated(p, { occurredAt: '2020-01-01T00:00:00Z' }));
    await withTransaction(db, (tx) => appendEvents(tx, [...old, ...recent, ...owed]));
    await db.query(`UPDATE outbox SET published_at = now() - interval '40 days' WHERE id = ANY($1::uuid[])`, [old.map((e) => e.id)]);
    await db.query(`UPDATE outbox SET published_at = now() - interval '1 day' WHERE id = ANY($1::uuid[])`, [recent.map((e) => e.id)]);
    await db.query(`UPDATE outbox SET created_at = now() - interval '400 days' WHERE id = ANY($1::uuid[])`, [owed.map((e) => e.id)]);

    const chunks: number[] = [];
    for (let n = 3; n === 3; ) chunks.push((n = await pruneEvents(db, 30, 3)));
    expect(chunks).toEqual([3, 3, 1]);
    const left = await db.query<{ id: string }>('SELECT id FROM outbox WHERE project_id = $1 ORDER BY seq', [p]);
    expect(left.rows.map((r) => r.id)).toEqual([...recent, ...owed].map((e) => e.id));
    expect(await pruneEvents(db, 30, 3)).toBe(0);
  }, 120_000);
});
