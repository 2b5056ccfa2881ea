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
    expect(decodeCursor('contacts', encodeCursor('contacts', { at: '2026-12-03T12:47:08.175123Z', id }))).toEqual({ at: '2026-12-03T12:47:08.175123Z', id });
    expect(decodeCursor('timeline', encodeCursor('timeline', { at: '2026-12-03T12:47:08.000000Z', id, rank: 2 }))).toEqual({ at: '2026-12-03T12:47:08.000000Z', id, rank: 2 });
  });

  it("refuses another list's cursor, or one of the same list in the other order", () => {
    const cursor = encodeCursor('messages:newest', { at: '2026-12-03T12:47:08.175123Z', id: uuidv7() });
    expect(() => decodeCursor('messages:oldest', cursor)).toThrow(/cursor is not valid/);
    expect(() => decodeCursor('sessions', cursor)).toThrow(/cursor is not valid/);
    // The form of earlier versions, which named no list, is one no list takes.
    expect(() => decodeCursor('contacts', forge(['2026-12-03T12:47:08.175123Z', uuidv7()]))).toThrow(/cursor is not valid/);
  });

  it.each([
    ['not base64 JSON', 'not-a-cursor'],
    ['a time JavaScript parses and PostgreSQL does not', forge(['events', '1', uuidv7()])],
    ['a time in words', forge(['events', 'Jan 1 2024 10:00', uuidv7()])],
    ['a time without its microseconds', forge(['events', '2026-12-03T12:47:08.175Z', uuidv7()])],
    ['an impossible date', forge(['events', '2026-13-45T12:47:08.175123Z', uuidv7()])],
    ['31 February, which JavaScript rolls over into March', forge(['events', '2024-02-31T00:00:00.000000Z', uuidv7()])],
    ['year 0, which PostgreSQL has not', forge(['events', '0000-01-01T00:00:00.000000Z', uuidv7()])],
    ['a leap second', forge(['events', '2016-12-31T23:59:60.000000Z', uuidv7()])],
    ['a rank beyond an int', forge(['events', '2026-12-03T12:47:08.175123Z', uuidv7(), 2 ** 31])],
    ['a negative rank', forge(['events', '2026-12-03T12:47:08.175123Z', uuidv7(), -1])],
    ['an id that is not a uuid', forge(['events', '2026-12-03T12:47:08.175123Z', 'x'])],
    ['a rank that is not an integer', forge(['events', '2026-12-03T12:47:08.175123Z', uuidv7(), 1.5])],
    ['too many parts', forge(['events', '2026-12-03T12:47:08.175123Z', uuidv7(), 1, 2])],
  ])('refuses %s', (_label, cursor) => {
    expect(() => decodeCursor('events', cursor)).toThrow(AppError);
    expect(() => decodeCursor('events', cursor)).toThrow(/cursor/);
  });

  it('stops a forged cursor before the database sees it', async () => {
    const { db } = await makeTestDb();
    await expect(listEvents(db, { projectId: uuidv7(), limit: 5, cursor: forge(['events', '1', uuidv7()]) })).rejects.toThrow(AppError);
  });
});
