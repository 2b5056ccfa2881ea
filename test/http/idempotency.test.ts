// Idempotency-Key on POSTs that create things.
import { describe, expect, it } from 'vitest';
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
