// A database error names the rows it is about in its `detail` (a duplicate key quotes the phone);
// what a consumer logs when its handler fails keeps the error's kind, code and constraint for the
// operator, and leaves the customer's data in the tenant's own records.
import { describe, expect, it } from 'vitest';
import { wrapHandler } from '../../src/broker/consumer-runner.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { makeLogger } from '../../src/observability/logger.ts';
import { makeTestDb } from '../support/env.ts';

describe('logged errors', () => {
  it("keep a database error's code and constraint but not the row it quotes", async () => {
    const { db } = await makeTestDb();
    const projectId = uuidv7();
    const insert = () => db.query(`INSERT INTO contacts (id, project_id, phone) VALUES ($1, $2, '+5511987650001')`, [uuidv7(), projectId]);
    await insert();
    const failure = await insert().then(() => undefined, (err: unknown) => err as Error & { detail?: string; code?: string });
    expect(failure?.detail).toContain('+5511987650001'); // what the database said

    const lines: string[] = [];
    const logger = makeLogger('info', {}, { write: (line: string) => void lines.push(line) });
    const handle = wrapHandler({ name: 'test', queue: 'q', handle: () => Promise.reject(failure) }, logger);
    await expect(handle({ messageId: 'm1', queue: 'q', routingKey: 'q', body: Buffer.alloc(0), headers: {}, attempt: 1 })).rejects.toBe(failure);

    expect(lines).toHaveLength(1);
    const line = JSON.parse(lines[0]);
    expect(lines[0]).not.toContain('+5511987650001');
    expect(line.err).toMatchObject({ message: expect.stringMatching(/duplicate key/), code: '23505', constraint: 'contacts_phone' });
    expect(line.err.detail).toBeUndefined();
  });

  it('log a value thrown that is not an error as it is', () => {
    const lines: string[] = [];
    const logger = makeLogger('info', {}, { write: (line: string) => void lines.push(line) });
    const thrown = { detail: 'kept: not an Error, and not ours to edit' };
    logger.warn({ err: thrown }, 'odd');
    expect(JSON.parse(lines[0]).err).toEqual({ detail: 'kept: not an Error, and not ours to edit' });
    expect(thrown.detail).toBe('kept: not an Error, and not ours to edit');
  });
});
