// Idempotency-Key on POSTs that create things.
import { createCipheriv, createDecipheriv, hkdfSync, randomBytes } from 'node:crypto';
import type { FastifyRequest } from 'fastify';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { answerWithin } from '../../src/http/idempotency.ts';
import { claimIdempotencyKey, completeIdempotencyKey, releaseIdempotencyKey } from '../../src/db/idempotency.sql.ts';
import type { Queryable } from '../../src/db/database.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { call, makeTenant, startApp } from './harness.ts';

const { app, db } = await startApp();
const a = await makeTenant(app);
const b = await makeTenant(app);

const keyCount = async (projectId: string) => (await db.query('SELECT count(*)::int AS n FROM api_keys WHERE project_id = $1', [projectId])).rows[0].n;
const create = (key: string, body: unknown, idem?: string) =>
  call(app, key, 'POST', '/api-keys', { body, headers: idem ? { 'idempotency-key': idem } : {} });

describe('Idempotency-Key', () => {
  it('replays the first response to the same key and body, creating nothing more', async () => {
    const before = await keyCount(a.projectId);
    const first = await create(a.keys.admin, { name: 'ci', role: 'agent' }, 'create-ci-key-1');
    expect(first.status).toBe(201);
    expect(first.headers['idempotent-replayed']).toBeUndefined();
    // Same body in another key order is the same request.
    const again = await create(a.keys.admin, { role: 'agent', name: 'ci' }, 'create-ci-key-1');
    expect(again.status).toBe(201);
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json).toEqual(first.json);
    expect(await keyCount(a.projectId)).toBe(before + 1);
  });

  it('replays the Location header of a response that had one', async () => {
    const body = { name: 'Ana Replay', phone: '+5511988887777' };
    const first = await call(app, a.keys.admin, 'POST', '/contacts', { body, headers: { 'idempotency-key': 'contact-ana-1' } });
    expect(first.status).toBe(201);
    expect(first.headers.location).toBe(`/api/v1/contacts/${first.json.id}`);
    const again = await call(app, a.keys.admin, 'POST', '/contacts', { body, headers: { 'idempotency-key': 'contact-ana-1' } });
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.headers.location).toBe(first.headers.location);
  });

  it('answers 409 idempotency_conflict to the same key with another body', async () => {
    expect((await create(a.keys.admin, { name: 'one', role: 'viewer' }, 'create-key-2')).status).toBe(201);
    const other = await create(a.keys.admin, { name: 'two', role: 'viewer' }, 'create-key-2');
    expect(other.status).toBe(409);
    expect(other.json.code).toBe('idempotency_conflict');
  });

  it('scopes keys per project', async () => {
    const inA = await create(a.keys.admin, { name: 'same', role: 'viewer' }, 'shared-key-3');
    const inB = await create(b.keys.admin, { name: 'same', role: 'viewer' }, 'shared-key-3');
    expect(inB.status).toBe(201);
    expect(inB.headers['idempotent-replayed']).toBeUndefined();
    expect(inB.json.id).not.toBe(inA.json.id);
  });

  it('scopes keys per credential: another key of the same project gets no replay of a response made for another', async () => {
    const second = (await create(a.keys.admin, { name: 'second admin', role: 'admin' })).json.key as string;
    const mine = await create(a.keys.admin, { name: 'deploy', role: 'admin' }, 'shared-key-6');
    const theirs = await create(second, { name: 'deploy', role: 'admin' }, 'shared-key-6');
    expect(theirs.status).toBe(201);
    expect(theirs.headers['idempotent-replayed']).toBeUndefined();
    expect(theirs.json.id).not.toBe(mine.json.id);
    expect(theirs.json.key).not.toBe(mine.json.key);
    // Each still gets its own response back.
    expect((await create(second, { name: 'deploy', role: 'admin' }, 'shared-key-6')).json).toEqual(theirs.json);
    expect((await create(a.keys.admin, { name: 'deploy', role: 'admin' }, 'shared-key-6')).json).toEqual(mine.json);
  });

  it('stores only a hash of the key and an encrypted response', async () => {
    const r = await create(a.keys.admin, { name: 'secretive', role: 'viewer' }, 'look-for-me-4');
    const rows = await db.query(`SELECT key_hash, encode(body, 'escape') AS body FROM idempotency_keys WHERE project_id = $1`, [a.projectId]);
    const dump = JSON.stringify(rows.rows);
    expect(dump).not.toContain('look-for-me-4');
    expect(dump).not.toContain(r.json.key);
  });

  it("seals a response with the server's secret too: the client's key alone, guessed, does not open it; one sealed before this release still replays", async () => {
    const first = await create(a.keys.admin, { name: 'guessable', role: 'admin' }, 'create-admin-key');
    expect(first.status).toBe(201);
    const row = async () =>
      (await db.query<{ key_hash: string; body: Uint8Array }>(`SELECT key_hash, body FROM idempotency_keys WHERE project_id = $1 ORDER BY created_at DESC LIMIT 1`, [a.projectId])).rows[0];
    const stored = Buffer.from((await row()).body);
    // What the release before derived its key from: the client's key and the project alone.
    const v1 = Buffer.from(hkdfSync('sha256', 'create-admin-key', a.projectId, 'ventros:idempotency:v1', 32));
    const open = (k: Buffer, sealed: Buffer) => {
      const d = createDecipheriv('aes-256-gcm', k, sealed.subarray(0, 12));
      d.setAuthTag(sealed.subarray(12, 28));
      return Buffer.concat([d.update(sealed.subarray(28)), d.final()]);
    };
    expect(() => open(v1, stored)).toThrow(); // the plaintext key would be in there
    // A row sealed the old way (stored within the 24 h before an upgrade) still replays.
    const iv = randomBytes(12);
    const c = createCipheriv('aes-256-gcm', v1, iv);
    const ct = Buffer.concat([c.update(Buffer.from(JSON.stringify(first.json))), c.final()]);
    await db.query(`UPDATE idempotency_keys SET body = $2 WHERE key_hash = $1`, [(await row()).key_hash, Buffer.concat([iv, c.getAuthTag(), ct])]);
    const again = await create(a.keys.admin, { name: 'guessable', role: 'admin' }, 'create-admin-key');
    expect(again.headers['idempotent-replayed']).toBe('true');
    expect(again.json).toEqual(first.json);
  });

  it('lets only the request that holds a claim record or release it: the one it was taken over from, finishing late, changes nothing', async () => {
    const keyHash = 'k'.repeat(64);
    const tx = <T>(fn: (q: Queryable) => Promise<T>) => withTransaction(db, fn, { projectId: a.projectId });
    const claim = (requestHash: string) => tx((q) => claimIdempotencyKey(q, { projectId: a.projectId, keyHash, method: 'POST', path: '/api-keys', requestHash, staleMs: 300_000 }));
    const r1 = await claim('body-x');
    if (!('claim' in r1)) throw new Error('the first request should hold the key');
    // R1 runs past the stale bound (its process looks dead), and R2, another body, takes the key over.
    await db.query(`UPDATE idempotency_keys SET created_at = created_at - interval '10 minutes' WHERE key_hash = $1`, [keyHash]);
    const r2 = await claim('body-y');
    if (!('claim' in r2)) throw new Error('the stale claim should be taken over');
    expect(r2.claim).not.toBe(r1.claim);
    // R1 finishes late: neither its response nor its failure touches R2's claim.
    expect(await tx((q) => completeIdempotencyKey(q, a.projectId, keyHash, r1.claim, { status: 201, contentType: 'application/json', body: Buffer.from('x'), location: null }))).toBe(false);
    // A handler that records its answer in its own transaction (POST /messages) is refused there,
    // so its change rolls back instead of committing beside R2's.
    const late = answerWithin({ idempotency: { keyHash, key: 'late-key', claim: r1.claim }, auth: { projectId: a.projectId } } as unknown as FastifyRequest, { secretKey: 's'.repeat(64), config: loadConfig({}) })!;
    await expect(tx((q) => late(q, { status: 202, body: { id: 'x' } }))).rejects.toThrow(/took it over/);
    await tx((q) => releaseIdempotencyKey(q, a.projectId, keyHash, r1.claim));
    const held = await db.query(`SELECT request_hash, status FROM idempotency_keys WHERE key_hash = $1`, [keyHash]);
    expect(held.rows).toEqual([{ request_hash: 'body-y', status: null }]);
    await tx((q) => completeIdempotencyKey(q, a.projectId, keyHash, r2.claim, { status: 201, contentType: 'application/json', body: Buffer.from('y'), location: null }));
    expect((await db.query(`SELECT status FROM idempotency_keys WHERE key_hash = $1`, [keyHash])).rows).toEqual([{ status: 201 }]);
  });

  it('does not replay to a caller whose role may not make the request', async () => {
    await create(a.keys.admin, { name: 'admins only', role: 'viewer' }, 'role-check-5');
    const r = await create(a.keys.viewer, { name: 'admins only', role: 'viewer' }, 'role-check-5');
    expect(r.status).toBe(403);
  });

  it('rejects an empty key', async () => {
    const r = await call(app, a.keys.admin, 'POST', '/api-keys', { body: { name: 'x', role: 'viewer' }, headers: { 'idempotency-key': '' } });
    expect(r.status).toBe(400);
  });
});
