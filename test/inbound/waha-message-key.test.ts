// The bare WAHA message key is derived twice: by wahaMessageKey() when the processor looks for a
// duplicate, and by the database's generated column `messages.external_key` that the unique index
// holds. If they ever disagree on an id, the lookup misses, the insert hits the index, and a
// redelivery is retried into a dead letter instead of counted as a duplicate. They must agree on
// every id, hostile ones included.
import { describe, expect, it } from 'vitest';
import { wahaMessageKey } from '../../src/inbound/waha/waha-jid.ts';
import { makeTestDb } from '../support/env.ts';

const IDS = [
  'false_5511912345678@c.us_3EB0C767D82B7C0A2F91',
  'true_5511912345678@c.us_3EB0C767D82B7C0A2F91',
  'false_120363025246125486@g.us_3EB0ABC_5511912345678@c.us',
  '3EB0C767D82B7C0A2F91',
  'wamid.HBgMNTUxMTkxMjM0NTY3FQIAEhggQTQ=',
  'false_1@c.us_ABC_\nx',
  'false_1@c.us_AB\nC',
  'false_1\n@c.us_ABC',
  'true__ABC',
  'false_x_',
  'false_x_y_',
  'maybe_x_y',
  '',
  'false_1@c.us_ABC\n',
];

describe('the bare WAHA message key', () => {
  it("is the same in code and in the database's generated column", async () => {
    const { db } = await makeTestDb();
    const r = await db.query(`SELECT generation_expression AS e FROM information_schema.columns WHERE table_name = 'messages' AND column_name = 'external_key'`);
    const expression = String(r.rows[0].e).replace(/\bexternal_id\b/, '$1::text');
    expect(expression).toContain('regexp_replace');
    for (const id of IDS) {
      const inDb = (await db.query(`SELECT ${expression} AS k`, [id])).rows[0].k;
      expect(wahaMessageKey(id), JSON.stringify(id)).toBe(inDb);
    }
  });
});
