// Keyset cursors: what a page hands out comes back as it was; anything else is a 400-kind error
// here, never text that reaches PostgreSQL's timestamptz cast and fails there.
import { describe, expect, it } from 'vitest';
import { decodeCursor, encodeCursor } from '../../src/db/keyset.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { AppError } from '../../src/errors.ts';
import { listEvents } from '../../src/outbox/outbox.sql.ts';
import { makeTestDb } from '../support/env.ts';

const forge = (tuple: unknown[]) => Buffer.from(JSON.stringify(tuple)).toString('base64url');

describe('keyset cursors', () => {
  it('round-trip the exact time, the id and the rank', () => {
    const id = uuidv7();
    expect(decodeCursor(encodeCursor({ at: '2026-12-03T12:47:08.175123Z', id }))).toEqual({ at: '2026-12-03T12:47:08.175123Z', id });
    expect(decodeCursor(encodeCursor({ at: '2026-12-03T12:47:08.000000Z', id, rank: 2 }))).toEqual({ at: '2026-12-03T12:47:08.000000Z', id, rank: 2 });
  });

  it.each([
    ['not base64 JSON', 'not-a-cursor'],
    ['a time JavaScript parses and PostgreSQL does not', forge(['1', uuidv7()])],
    ['a time in words', forge(['Jan 1 2024 10:00', uuidv7()])],
    ['a time without its microseconds', forge(['2026-12-03T12:47:08.175Z', uuidv7()])],
    ['an impossible date', forge(['2026-13-45T12:47:08.175123Z', uuidv7()])],
    ['31 February, which JavaScript rolls over into March', forge(['2024-02-31T00:00:00.000000Z', uuidv7()])],
    ['year 0, which PostgreSQL has not', forge(['0000-01-01T00:00:00.000000Z', uuidv7()])],
    ['a leap second', forge(['2016-12-31T23:59:60.000000Z', uuidv7()])],
    ['a rank beyond an int', forge(['2026-12-03T12:47:08.175123Z', uuidv7(), 2 ** 31])],
    ['a negative rank', forge(['2026-12-03T12:47:08.175123Z', uuidv7(), -1])],
    ['an id that is not a uuid', forge(['2026-12-03T12:47:08.175123Z', 'x'])],
    ['a rank that is not an integer', forge(['2026-12-03T12:47:08.175123Z', uuidv7(), 1.5])],
    ['too many parts', forge(['2026-12-03T12:47:08.175123Z', uuidv7(), 1, 2])],
  ])('refuses %s', (_label, cursor) => {
    expect(() => decodeCursor(cursor)).toThrow(AppError);
    expect(() => decodeCursor(cursor)).toThrow(/cursor/);
  });

  it('stops a forged cursor before the database sees it', async () => {
    const { db } = await makeTestDb();
    await expect(listEvents(db, { projectId: uuidv7(), limit: 5, cursor: forge(['1', uuidv7()]) })).rejects.toThrow(AppError);
  });
});
