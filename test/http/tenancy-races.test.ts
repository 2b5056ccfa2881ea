// Tenancy, roles and credentials where timing or numbering could give something away: a
// credential revoked while a request with it was being authenticated (the auth cache stored it
// after the revocation dropped it), and list cursors that counted other projects' rows. Each test
// failed before its fix.
import { describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { secretHash } from '../../src/domain/credentials.ts';
import { call, makeTenant, PASSWORD, startApp } from './harness.ts';

const { app, db } = await startApp();

async function login(email: string): Promise<string> {
  const r = await app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password: PASSWORD } });
  if (r.statusCode !== 200) throw new Error(`login answered ${r.statusCode}: ${r.body}`);
  return r.json().token as string;
}

/**
 * Holds the answer of the first query of `db` that `match` picks (it has already run in the
 * database) until `release()`: a deterministic stand-in for a slow round trip, so that another
 * request can complete in between. Test instrumentation only; the app is not changed.
 */
function holdAnswer(target: Database, match: (sql: string, params: readonly unknown[]) => boolean) {
  const original = target.query;
  let reached!: () => void;
  let open!: () => void;
  const arrived = new Promise<void>((r) => (reached = r));
  const opened = new Promise<void>((r) => (open = r));
  let armed = true;
  (target as { query: Database['query'] }).query = async function (this: unknown, sql: string, params?: readonly unknown[]) {
    const answer = await original.call(target, sql, params);
    if (armed && match(sql, params ?? [])) {
      armed = false;
      reached();
      await opened;
    }
    return answer;
  } as Database['query'];
  return {
    arrived,
    release() {
      open();
      (target as { query: Database['query'] }).query = original;
    },
  };
}

describe('a credential resolved while it is being revoked is not cached past the revocation', () => {
  // The auth cache (src/http/auth.ts) reads a credential, then stores what it read. A revocation
  // that commits and calls authCache.forget() in between is undone by that store: the old caller
  // is trusted for AUTH_CACHE_TTL_MS more on this very server, long enough to mint an API key that
  // never expires. Each test holds the read's answer until the revocation has completed.

  it('an admin API key revoked (204) while a request with it is being authenticated answers 401 right after, and cannot mint a new key', async () => {
    const a = await makeTenant(app);
    const second = await call(app, a.keys.admin, 'POST', '/api-keys', { body: { name: 'second admin', role: 'admin' } });
    expect(second.status).toBe(201);
    const { id: keyId, key } = second.json as { id: string; key: string };
    // Its use reads it by hash (found active), then caches it: hold the read's answer.
    const hold = holdAnswer(db, (sql, params) => /FROM api_keys WHERE hash = \$1/.test(sql) && params[0] === secretHash(key));
    const inFlight = call(app, key, 'GET', '/auth/me');
    await hold.arrived;

    expect((await call(app, a.keys.admin, 'DELETE', `/api-keys/${keyId}`)).status).toBe(204);
    hold.release();
    await inFlight; // began before the revocation: whatever it answers is fair

    // The revocation has completed on this server ("takes effect at once on this server").
    const me = await call(app, key, 'GET', '/auth/me');
    const minted = await call(app, key, 'POST', '/api-keys', { body: { name: 'backdoor', role: 'admin' } });
    const mintedWorks = minted.status === 201 ? (await call(app, minted.json.key, 'GET', '/auth/me')).status : null;
    expect({ me: me.status, mint: minted.status, mintedKeyWorks: mintedWorks }).toEqual({ me: 401, mint: 401, mintedKeyWorks: null });
  });

  it('an admin removed from a project (204) while a request of theirs is being authenticated is refused right after, and cannot mint a key there', async () => {
    const a = await makeTenant(app);
    const b = await makeTenant(app);
    expect((await call(app, a.keys.admin, 'POST', `/projects/${a.projectId}/members`, { body: { email: b.email, role: 'admin' } })).status).toBe(201);
    const token = await login(b.email);
    const inA = { headers: { 'x-project-id': a.projectId } };
    const hold = holdAnswer(db, (sql, params) => /FROM project_members WHERE user_id = \$1 AND project_id = \$2/.test(sql) && params[0] === b.userId);
    const inFlight = call(app, token, 'GET', '/auth/me', inA);
    await hold.arrived; // B's membership in A was read (admin); the request has not finished authenticating

    expect((await call(app, a.keys.admin, 'DELETE', `/projects/${a.projectId}/members/${b.userId}`)).status).toBe(204);
    hold.release();
    await inFlight;

    const me = await call(app, token, 'GET', '/auth/me', inA);
    const minted = await call(app, token, 'POST', '/api-keys', { ...inA, body: { name: 'kept after removal', role: 'admin' } });
    const mintedWorks = minted.status === 201 ? (await call(app, minted.json.key, 'GET', '/auth/me')).json?.project?.id : null;
    expect({ me: me.status, mint: minted.status, mintedKeyActsIn: mintedWorks }).toEqual({ me: 404, mint: 404, mintedKeyActsIn: null });
  });

  it('an admin demoted to viewer (200) while a request of theirs is being authenticated gets 403 right after, not the admin role', async () => {
    const a = await makeTenant(app);
    const b = await makeTenant(app);
    expect((await call(app, a.keys.admin, 'POST', `/projects/${a.projectId}/members`, { body: { email: b.email, role: 'admin' } })).status).toBe(201);
    const token = await login(b.email);
    const inA = { headers: { 'x-project-id': a.projectId } };
    const hold = holdAnswer(db, (sql, params) => /FROM project_members WHERE user_id = \$1 AND project_id = \$2/.test(sql) && params[0] === b.userId);
    const inFlight = call(app, token, 'GET', '/auth/me', inA);
    await hold.arrived;

    const demoted = await call(app, a.keys.admin, 'POST', `/projects/${a.projectId}/members`, { body: { email: b.email, role: 'viewer' } });
    expect(demoted.status).toBe(200);
    expect(demoted.json.role).toBe('viewer');
    hold.release();
    await inFlight;

    const me = await call(app, token, 'GET', '/auth/me', inA);
    const minted = await call(app, token, 'POST', '/api-keys', { ...inA, body: { name: 'kept after demotion', role: 'admin' } });
    expect({ role: me.json?.role, mint: minted.status }).toEqual({ role: 'viewer', mint: 403 });
  });
});

describe("a project's cursors carry nothing of other projects", () => {
  it("A cannot read off its own pipeline-history cursors how many moves other projects made", async () => {
    const a = await makeTenant(app);
    const b = await makeTenant(app);
    const statusesOf = async (t: typeof a) => (await call(app, t.keys.admin, 'GET', `/pipelines/${t.pipelineId}`)).json.statuses.map((s: any) => s.id as string);
    const [aStatuses, bStatuses] = [await statusesOf(a), await statusesOf(b)];
    const contactOf = async (t: typeof a, phone: string) => (await call(app, t.keys.agent, 'POST', '/contacts', { body: { phone } })).json.id as string;
    const aContact = await contactOf(a, '+5511955554444');
    const bContact = await contactOf(b, '+5511955553333');
    const move = async (t: typeof a, contact: string, status: string) =>
      expect((await call(app, t.keys.agent, 'PUT', `/contacts/${contact}/pipeline-status`, { body: { pipeline_id: t.pipelineId, status_id: status } })).json.changed).toBe(true);

    await move(a, aContact, aStatuses[0]);
    const bMoves = 3; // B's business, of which A should learn nothing
    for (let i = 1; i <= bMoves; i++) await move(b, bContact, bStatuses[i]);
    await move(a, aContact, aStatuses[1]);
    await move(a, aContact, aStatuses[2]);

    const history = `/contacts/${aContact}/pipeline-history`;
    const first = await call(app, a.keys.viewer, 'GET', history, { query: { limit: '1' } });
    const second = await call(app, a.keys.viewer, 'GET', history, { query: { limit: '1', cursor: first.json.next_cursor } });
    expect([first.json.data[0].status_id, second.json.data[0].status_id]).toEqual([aStatuses[0], aStatuses[1]]);
    // Each cursor names A's last move seen by its id, and nothing else: no number that, compared
    // between two pages, would count the moves other projects made in between.
    const decoded = (cursor: string) => Buffer.from(cursor, 'base64url').toString('utf8');
    expect(decoded(first.json.next_cursor), `A's cursors must not count B's ${bMoves} moves`).toBe(`h:${first.json.data[0].id}`);
    expect(decoded(second.json.next_cursor)).toBe(`h:${second.json.data[0].id}`);
    // The pages still go on in move order, to the end.
    const third = await call(app, a.keys.viewer, 'GET', history, { query: { limit: '1', cursor: second.json.next_cursor } });
    expect(third.json.data.map((h: { status_id: string }) => h.status_id)).toEqual([aStatuses[2]]);
    expect(third.json.next_cursor).toBeNull();
    // A cursor of the old form, or anything else made up, is refused.
    const forged = await call(app, a.keys.viewer, 'GET', history, { query: { cursor: Buffer.from('h1').toString('base64url') } });
    expect(forged.status).toBe(400);
  });
});
