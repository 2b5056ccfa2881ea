// Dead letters: one row per death (the same death written twice is one), and listing them page by
// page: newest first, every row exactly once, also rows created in the same microsecond (same
// transaction) and rows apart by less than a millisecond.
import { describe, expect, it } from 'vitest';
import { PROJECT_HEADER, SEND_HEADER } from '../../src/broker/broker.ts';
import { insertDeadLetter, listDeadLetters } from '../../src/broker/dead-letters.sql.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { makeTestDb, uniqueName } from '../support/env.ts';
import { walkCursor } from '../support/paging.ts';

const { db } = await makeTestDb();

describe('insertDeadLetter', () => {
  it('records one send\'s death once; another send of the message, another queue, or no send id apart', async () => {
    const queue = uniqueName('dead');
    const death = {
      queue, messageId: uuidv7(), routingKey: 'contact.deleted', headers: { [SEND_HEADER]: uuidv7() }, body: Buffer.from('{}'), error: 'first', attempts: 3,
    };
    const first = await insertDeadLetter(db, death);
    // Its ack was lost, the message came back and failed its last attempt again.
    expect(await insertDeadLetter(db, { ...death, error: 'second' })).toBe(first);
    const resent = { ...death, headers: { [SEND_HEADER]: uuidv7() } }; // replayed, or due again
    const afterResend = await insertDeadLetter(db, resent);
    expect(await insertDeadLetter(db, resent)).toBe(afterResend);
    const elsewhere = await insertDeadLetter(db, { ...death, queue: `${queue}.other` });
    const unkeyed = [
      await insertDeadLetter(db, { ...death, headers: {} }),
      await insertDeadLetter(db, { ...death, headers: {} }),
      await insertDeadLetter(db, { ...death, messageId: '' }),
      await insertDeadLetter(db, { ...death, messageId: '' }),
    ];
    expect(new Set([first, afterResend, elsewhere, ...unkeyed]).size).toBe(7);
    const rows = (await listDeadLetters(db, { queue, limit: 10 })).items;
    expect(rows).toHaveLength(6);
    expect(rows.find((d) => d.id === first)?.error).toBe('first');
  });
});

describe('listDeadLetters', () => {
  it('pages through every dead letter once, newest first, including ties and sub-millisecond times', async () => {
    const project = uuidv7();
    const dead = (n: number) => ({
      queue: 'inbound.raw', messageId: `m-${n}`, routingKey: 'inbound.raw', headers: { [PROJECT_HEADER]: project },
      body: Buffer.from(`body ${n}`), error: 'handler failed', attempts: 5,
    });
    // Five in one transaction (the same now()), four more whose times differ by 100 µs.
    const tied = await withTransaction(db, async (tx) => {
      const ids: string[] = [];
      for (let n = 0; n < 5; n++) ids.push(await insertDeadLetter(tx, dead(n)));
      return ids;
    });
    const apart: string[] = [];
    for (let n = 5; n < 9; n++) apart.push(await insertDeadLetter(db, dead(n)));
    for (let i = 0; i < apart.length; i++) {
      await db.query(`UPDATE dead_letters SET created_at = '2030-01-01T00:00:00Z'::timestamptz + (interval '100 microseconds' * $2::int) WHERE id = $1::uuid`, [apart[i], i + 1]);
    }

    const walked = await walkCursor(async (cursor) => {
      const page = await listDeadLetters(db, { projectId: project, limit: 2, cursor });
      return { items: page.items.map((d) => d.id), next: page.nextCursor };
    });
    expect(walked.largest).toBeLessThanOrEqual(2);
    const { items: seen, pages } = walked;

    // The sub-millisecond ones are newest (2030, latest first), then the tied ones by id, descending.
    expect(seen).toEqual([...[...apart].reverse(), ...[...tied].sort().reverse()]);
    expect(pages).toBe(5);
  });

  it('refuses a cursor it did not make', async () => {
    await expect(listDeadLetters(db, { limit: 2, cursor: 'not-a-cursor' })).rejects.toThrow(/cursor/);
    const forged = Buffer.from(JSON.stringify(['yesterday', uuidv7()])).toString('base64url');
    await expect(listDeadLetters(db, { limit: 2, cursor: forged })).rejects.toThrow(/cursor/);
  });
});
