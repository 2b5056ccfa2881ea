// Sign-up, login, login tokens, API keys, projects and members, through the HTTP API.
import { describe, expect, it } from 'vitest';
import { uniqueName } from '../support/env.ts';
import { call, makeTenant, PASSWORD, register, startApp } from './harness.ts';

const { app, db } = await startApp();

const counts = async () =>
  (
    await db.query(
      `SELECT (SELECT count(*)::int FROM users) AS users, (SELECT count(*)::int FROM projects) AS projects,
              (SELECT count(*)::int FROM api_keys) AS keys, (SELECT count(*)::int FROM pipelines) AS pipelines`,
    )
  ).rows[0];

const login = (email: string, password: string, ip?: string) =>
  app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password }, ...(ip ? { remoteAddress: ip } : {}) });

describe('POST /auth/register', () => {
  it('refuses more than 30 registrations from one address in 15 minutes with 429; another address still registers', async () => {
    const from = (ip: string) =>
      app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { name: 'Bulk', email: `${uniqueName('bulk')}@example.com`, password: PASSWORD }, remoteAddress: ip });
    for (let i = 0; i < 30; i++) expect((await from('198.51.100.77')).statusCode).toBe(201);
    const refused = await from('198.51.100.77');
    expect(refused.statusCode).toBe(429);
    expect(Number(refused.headers['retry-after'])).toBeGreaterThan(0);
    expect((await from('198.51.100.78')).statusCode).toBe(201);
  });

  it('creates the user, a project with its default pipeline, and an admin key shown once', async () => {
    const email = `${uniqueName('reg')}@example.com`;
    const r = await register(app, email);
    expect(r.status).toBe(201);
    expect(r.json.user).toMatchObject({ email, name: 'Test Person' });
    expect(r.json.user).not.toHaveProperty('password_hash');
    expect(r.json.project).toMatchObject({ role: 'admin' });
    expect(r.json.api_key.key).toMatch(/^vtr_[A-Za-z0-9_-]{43}$/);
    expect(r.json.api_key).toMatchObject({ role: 'admin', prefix: r.json.api_key.key.slice(0, 12) });

    const projectId = r.json.project.id;
    const pipeline = await db.query('SELECT id, is_default FROM pipelines WHERE project_id = $1', [projectId]);
    expect(pipeline.rows).toEqual([{ id: r.json.project.settings.default_pipeline_id, is_default: true }]);
    const statuses = await db.query('SELECT kind FROM pipeline_statuses WHERE project_id = $1 ORDER BY position', [projectId]);
    expect(statuses.rows.map((x) => x.kind)).toEqual(['open', 'active', 'closed', 'closed']);
    const stored = await db.query('SELECT hash, prefix FROM api_keys WHERE project_id = $1', [projectId]);
    expect(JSON.stringify(stored.rows)).not.toContain(r.json.api_key.key);
    const pw = await db.query('SELECT password_hash FROM users WHERE email = $1', [email]);
    expect(pw.rows[0].password_hash).toMatch(/^scrypt\$/);

    const me = await call(app, r.json.api_key.key, 'GET', '/auth/me');
    expect(me.json).toMatchObject({ kind: 'api_key', role: 'admin', project: { id: projectId } });
  });

  it('answers 409 to an email already registered (in any case), with no key and no change', async () => {
    const email = `${uniqueName('twice')}@example.com`;
    expect((await register(app, email)).status).toBe(201);
    const before = await counts();
    const again = await register(app, email.toUpperCase(), 'another password entirely');
    expect(again.status).toBe(409);
    expect(again.json.code).toBe('email_taken');
    expect(again.headers['content-type']).toMatch(/^application\/problem\+json/);
    expect(again.body).not.toMatch(/vtr_/);
    expect(again.json).not.toHaveProperty('api_key');
    expect(await counts()).toEqual(before);
    // The original password still works; the second one never took.
    expect((await login(email, PASSWORD)).statusCode).toBe(200);
    expect((await login(email, 'another password entirely')).statusCode).toBe(401);
  });

  it('refuses a short password', async () => {
    const r = await register(app, `${uniqueName('short')}@example.com`, 'short');
    expect(r.status).toBe(400);
    expect(r.json.code).toBe('validation');
  });
});

describe('POST /auth/login', () => {
  it('returns an expiring token that works, with X-Project-ID choosing among the projects', async () => {
    const a = await makeTenant(app);
    const r = await login(a.email, PASSWORD);
    expect(r.statusCode).toBe(200);
    const body = r.json();
    expect(body.token).toMatch(/^vtl_/);
    expect(Date.parse(body.expires_at)).toBeGreaterThan(Date.now());
    expect(body.projects.map((p: any) => p.id)).toEqual([a.projectId]);

    const created = await call(app, body.token, 'POST', '/projects', { body: { name: 'Second' } });
    expect(created.status).toBe(201);
    const second = created.json.id;
    const meDefault = await call(app, body.token, 'GET', '/auth/me');
    expect(meDefault.json).toMatchObject({ kind: 'user', role: 'admin', project: { id: a.projectId }, user: { email: a.email } });
    const meSecond = await call(app, body.token, 'GET', '/auth/me', { headers: { 'x-project-id': second } });
    expect(meSecond.json.project.id).toBe(second);
    // An empty header (a workflow's unset variable) is a 400, not "the first project".
    for (const empty of ['', ' ']) {
      const blank = await call(app, body.token, 'POST', '/contacts', { headers: { 'x-project-id': empty }, body: { phone: '+5511955551234' } });
      expect(blank.status, JSON.stringify(blank.json)).toBe(400);
      expect(blank.json.errors).toEqual([{ field: 'X-Project-ID', message: 'must be a UUID' }]);
    }
    // X-API-Key takes API keys only: a login token goes in Authorization.
    const tokenAsKey = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': body.token } });
    expect(tokenAsKey.statusCode).toBe(401);
    expect(tokenAsKey.json().detail).toContain('Authorization: Bearer');
    const list = await call(app, body.token, 'GET', '/projects');
    expect(list.json.data.map((p: any) => p.id)).toEqual([a.projectId, second]);

    // A project the user is not a member of is "not found", like any other project's resource.
    const other = await makeTenant(app);
    const foreign = await call(app, body.token, 'GET', '/auth/me', { headers: { 'x-project-id': other.projectId } });
    expect(foreign.status).toBe(404);
    // An API key cannot be pointed at another project either.
    const keyElsewhere = await call(app, a.keys.admin, 'GET', '/auth/me', { headers: { 'x-project-id': other.projectId } });
    expect(keyElsewhere.status).toBe(404);
  });

  it('answers 401 to a wrong password and an unknown email alike, and 429 after 5 failures', async () => {
    const a = await makeTenant(app);
    const ip = '203.0.113.7';
    let detail = '';
    for (let i = 0; i < 5; i++) {
      const r = await login(a.email, `wrong password ${i}`, ip);
      expect(r.statusCode).toBe(401);
      expect(r.json().code).toBe('unauthorized');
      detail = r.json().detail;
    }
    const locked = await login(a.email, PASSWORD, ip);
    expect(locked.statusCode).toBe(429);
    expect(locked.json().code).toBe('rate_limited');
    expect(Number(locked.headers['retry-after'])).toBeGreaterThan(0);
    // From another address too: the limit is per email.
    expect((await login(a.email, PASSWORD, '198.51.100.9')).statusCode).toBe(429);

    const unknown = await login(`${uniqueName('nobody')}@example.com`, 'whatever password', '198.51.100.10');
    expect(unknown.statusCode).toBe(401);
    expect(unknown.json().detail).toBe(detail);
  });

  it('limits failures per address across emails', async () => {
    const ip = '192.0.2.44';
    await db.query(`INSERT INTO login_attempts (email, ip) SELECT 'spray' || g || '@example.com', $1 FROM generate_series(1, 50) g`, [ip]);
    const r = await login(`${uniqueName('spray')}@example.com`, 'nope nope', ip);
    expect(r.statusCode).toBe(429);
    expect((await login(`${uniqueName('spray')}@example.com`, 'nope nope', '192.0.2.45')).statusCode).toBe(401);
  });
});

describe('the per-address login limit behind a proxy', () => {
  const spray = async (into: typeof db, ip: string) =>
    into.query(`INSERT INTO login_attempts (email, ip) SELECT 'spray' || g || '@example.com', $1 FROM generate_series(1, 50) g`, [ip]);
  const viaProxy = (target: typeof app, client: string) =>
    target.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email: `${uniqueName('p')}@example.com`, password: 'nope nope' }, remoteAddress: '10.0.0.2', headers: { 'x-forwarded-for': client } });

  it.each(['10.0.0.0/8', 'true'])('counts the client named by a trusted proxy, not the proxy, with TRUST_PROXY=%s', async (trust) => {
    const { app: proxied, db: proxiedDb } = await startApp({ TRUST_PROXY: trust });
    await spray(proxiedDb, '192.0.2.60');
    expect((await viaProxy(proxied, '192.0.2.60')).statusCode).toBe(429);
    // Everyone else behind the same proxy still gets in (here: is told the password is wrong).
    expect((await viaProxy(proxied, '192.0.2.61')).statusCode).toBe(401);
  });

  it('believes X-Forwarded-For only from the proxies named: a client reaching the port directly cannot pick its address', async () => {
    const { app: proxied, db: proxiedDb } = await startApp({ TRUST_PROXY: '10.0.0.0/8' });
    await spray(proxiedDb, '198.51.100.7');
    const direct = await proxied.inject({
      method: 'POST', url: '/api/v1/auth/login', payload: { email: `${uniqueName('p')}@example.com`, password: 'nope nope' },
      remoteAddress: '198.51.100.7', headers: { 'x-forwarded-for': '192.0.2.99' },
    });
    expect(direct.statusCode).toBe(429);
  });

  it('believes no X-Forwarded-For by default: a client cannot pick the address it is counted under', async () => {
    await spray(db, '10.0.0.2');
    expect((await viaProxy(app, '192.0.2.62')).statusCode).toBe(429);
  });
});

describe('login tokens and API keys', () => {
  it('answers 401 to a revoked key, at once', async () => {
    const a = await makeTenant(app);
    expect((await call(app, a.keys.agent, 'GET', '/auth/me')).status).toBe(200); // now cached
    const del = await call(app, a.keys.admin, 'DELETE', `/api-keys/${a.keyIds.agent}`);
    expect(del.status).toBe(204);
    const after = await call(app, a.keys.agent, 'GET', '/auth/me');
    expect(after.status).toBe(401);
    expect(after.headers['www-authenticate']).toBe('Bearer');
    const viaHeader = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': a.keys.agent } });
    expect(viaHeader.statusCode).toBe(401);
    const list = await call(app, a.keys.admin, 'GET', '/api-keys');
    expect(list.json.data.map((k: any) => k.id)).not.toContain(a.keyIds.agent);
  });

  it('answers 401 to an expired token and to a logged-out one', async () => {
    const a = await makeTenant(app);
    const t1 = (await login(a.email, PASSWORD)).json().token;
    const t2 = (await login(a.email, PASSWORD)).json().token;
    await db.query(`UPDATE auth_tokens SET expires_at = now() - interval '1 second' WHERE user_id = $1`, [a.userId]);
    // The first was never used (no cache entry); expiry is checked by the database clock.
    expect((await call(app, t1, 'GET', '/auth/me')).status).toBe(401);
    const t3 = (await login(a.email, PASSWORD)).json().token;
    expect((await call(app, t3, 'GET', '/auth/me')).status).toBe(200);
    expect((await call(app, t3, 'POST', '/auth/logout')).status).toBe(204);
    expect((await call(app, t3, 'GET', '/auth/me')).status).toBe(401);
    expect((await call(app, t2, 'GET', '/auth/me')).status).toBe(401);
  });

  it('logs out everywhere: every login token of the user stops working, at once; API keys go on', async () => {
    const a = await makeTenant(app);
    const other = await makeTenant(app);
    const tokens = await Promise.all([1, 2, 3].map(async () => (await login(a.email, PASSWORD)).json().token as string));
    const theirs = (await login(other.email, PASSWORD)).json().token as string;
    for (const t of [...tokens, theirs]) expect((await call(app, t, 'GET', '/auth/me')).status).toBe(200); // cached now
    expect((await call(app, tokens[0], 'POST', '/auth/logout-all')).status).toBe(204);
    for (const t of tokens) expect((await call(app, t, 'GET', '/auth/me')).status).toBe(401);
    expect((await call(app, theirs, 'GET', '/auth/me')).status).toBe(200); // another user's
    expect((await call(app, a.keys.admin, 'GET', '/auth/me')).status).toBe(200);
    const byKey = await call(app, a.keys.admin, 'POST', '/auth/logout-all');
    expect(byKey.status).toBe(400);
    expect(byKey.json.detail).toMatch(/API key/);
    expect((await login(a.email, PASSWORD)).statusCode).toBe(200); // the password still works
  });

  it('changes the password with the current one: old tokens and the old password stop working, the new token works', async () => {
    const a = await makeTenant(app);
    const before = (await login(a.email, PASSWORD)).json().token as string;
    const used = (await login(a.email, PASSWORD)).json().token as string;
    expect((await call(app, before, 'GET', '/auth/me')).status).toBe(200);
    const NEW = 'a much better passphrase';

    const wrong = await call(app, used, 'POST', '/auth/password', { body: { current_password: 'not it at all', new_password: NEW } });
    expect(wrong.status).toBe(400);
    expect(wrong.json.errors).toEqual([{ field: 'current_password', message: 'wrong password' }]);
    const short = await call(app, used, 'POST', '/auth/password', { body: { current_password: PASSWORD, new_password: 'short' } });
    expect(short.status).toBe(400);
    expect((await call(app, a.keys.admin, 'POST', '/auth/password', { body: { current_password: PASSWORD, new_password: NEW } })).status).toBe(400);

    const changed = await call(app, used, 'POST', '/auth/password', { body: { current_password: PASSWORD, new_password: NEW } });
    expect(changed.status).toBe(200);
    expect(changed.json.token).toMatch(/^vtl_/);
    expect((await call(app, before, 'GET', '/auth/me')).status).toBe(401);
    expect((await call(app, used, 'GET', '/auth/me')).status).toBe(401);
    expect((await call(app, changed.json.token, 'GET', '/auth/me')).json.user.email).toBe(a.email);
    expect((await login(a.email, PASSWORD)).statusCode).toBe(401);
    expect((await login(a.email, NEW)).statusCode).toBe(200);
  });

  it('counts a wrong current password as a failed login: after 5, a change (and a login) is refused with 429', async () => {
    const a = await makeTenant(app);
    const token = (await login(a.email, PASSWORD)).json().token as string;
    for (let i = 0; i < 5; i++) {
      const r = await call(app, token, 'POST', '/auth/password', { body: { current_password: `guess ${i}`, new_password: 'another passphrase' } });
      expect(r.status).toBe(400);
    }
    const locked = await call(app, token, 'POST', '/auth/password', { body: { current_password: PASSWORD, new_password: 'another passphrase' } });
    expect(locked.status).toBe(429);
    expect(Number(locked.headers['retry-after'])).toBeGreaterThan(0);
    expect((await login(a.email, PASSWORD, '198.51.100.77')).statusCode).toBe(429);
    expect((await call(app, token, 'GET', '/auth/me')).status).toBe(200); // nothing was changed
  });

  it('accepts X-API-Key, rejects garbage, and lists keys with prefix, creator and last use only', async () => {
    const a = await makeTenant(app);
    const viaHeader = await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { 'x-api-key': a.keys.viewer } });
    expect(viaHeader.statusCode).toBe(200);
    expect((await call(app, 'vtr_not-a-real-key', 'GET', '/auth/me')).status).toBe(401);
    expect((await app.inject({ method: 'GET', url: '/api/v1/auth/me' })).statusCode).toBe(401);
    expect((await app.inject({ method: 'GET', url: '/api/v1/auth/me', headers: { authorization: 'Basic abc' } })).statusCode).toBe(401);
    const list = await call(app, a.keys.admin, 'GET', '/api-keys');
    expect(list.status).toBe(200);
    const fields = ['created_at', 'created_by', 'created_by_key_id', 'id', 'last_used_at', 'name', 'prefix', 'revoked_at', 'role'];
    for (const k of list.json.data) expect(Object.keys(k).sort()).toEqual(fields);
    expect(list.body).not.toContain(a.keys.viewer);
    expect(list.json.data.find((k: any) => k.id === a.keyIds.viewer).last_used_at).not.toBeNull();
  });

  it('pages key lists with an opaque cursor', async () => {
    const a = await makeTenant(app);
    const seen: string[] = [];
    let cursor: string | null = null;
    do {
      const page: any = await call(app, a.keys.admin, 'GET', '/api-keys', { query: { limit: '3', ...(cursor ? { cursor } : {}) } });
      expect(page.status).toBe(200);
      seen.push(...page.json.data.map((k: any) => k.id));
      cursor = page.json.next_cursor;
    } while (cursor);
    expect(seen.sort()).toEqual(Object.values(a.keyIds).sort());
    const bad = await call(app, a.keys.admin, 'GET', '/api-keys', { query: { cursor: 'nonsense' } });
    expect(bad.status).toBe(400);
    expect((await call(app, a.keys.admin, 'GET', '/api-keys', { query: { limit: '201' } })).status).toBe(400);
  });
});

describe('projects and members', () => {
  it('adds a registered user with a role that then applies to their login', async () => {
    const a = await makeTenant(app);
    const b = await makeTenant(app);
    const added = await call(app, a.keys.admin, 'POST', `/projects/${a.projectId}/members`, { body: { email: b.email, role: 'viewer' } });
    expect(added.status).toBe(201);
    expect(added.json).toMatchObject({ user_id: b.userId, role: 'viewer' });

    const token = (await login(b.email, PASSWORD)).json().token;
    const inA = { headers: { 'x-project-id': a.projectId } };
    expect((await call(app, token, 'GET', `/projects/${a.projectId}`, inA)).json.role).toBe('viewer');
    expect((await call(app, token, 'PATCH', `/projects/${a.projectId}`, { ...inA, body: { name: 'x' } })).status).toBe(403);

    const promoted = await call(app, a.keys.admin, 'POST', `/projects/${a.projectId}/members`, { body: { email: b.email, role: 'manager' } });
    expect(promoted.status).toBe(200);
    expect((await call(app, token, 'GET', '/auth/me', inA)).json.role).toBe('manager');

    expect((await call(app, a.keys.admin, 'DELETE', `/projects/${a.projectId}/members/${b.userId}`)).status).toBe(204);
    expect((await call(app, token, 'GET', '/auth/me', inA)).status).toBe(404);
  });

  it('keeps at least one admin', async () => {
    const a = await makeTenant(app);
    const demote = await call(app, a.keys.admin, 'POST', `/projects/${a.projectId}/members`, { body: { email: a.email, role: 'agent' } });
    expect(demote.status).toBe(409);
    expect((await call(app, a.keys.admin, 'DELETE', `/projects/${a.projectId}/members/${a.userId}`)).status).toBe(409);
  });

  it('renames a project and checks the default pipeline belongs to it', async () => {
    const a = await makeTenant(app);
    const b = await makeTenant(app);
    // A key set to null is removed; a null inside a value is the value's own, kept.
    const nested = await call(app, a.keys.admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { hours: { sat: null, mon: '9-17' }, gone: 1 } } });
    expect(nested.json.settings).toMatchObject({ hours: { sat: null, mon: '9-17' }, gone: 1 });
    const removed = await call(app, a.keys.admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { gone: null } } });
    expect(removed.json.settings.hours).toEqual({ sat: null, mon: '9-17' });
    expect(removed.json.settings).not.toHaveProperty('gone');
    const ok = await call(app, a.keys.admin, 'PATCH', `/projects/${a.projectId}`, { body: { name: 'Renamed', settings: { locale: 'pt-BR' } } });
    expect(ok.json).toMatchObject({ name: 'Renamed', settings: { locale: 'pt-BR', default_pipeline_id: a.pipelineId } });
    const foreign = await call(app, a.keys.admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { default_pipeline_id: b.pipelineId } } });
    expect(foreign.status).toBe(400);
  });

  it('keeps project settings within 16 KiB, counting what is already there', async () => {
    const a = await makeTenant(app);
    const half = 'x'.repeat(9 * 1024);
    expect((await call(app, a.keys.admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { a: half } } })).status).toBe(200);
    const over = await call(app, a.keys.admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { b: half } } });
    expect(over.status).toBe(400);
    expect(over.json.errors).toEqual([{ field: 'settings', message: 'too large' }]);
    const now = await call(app, a.keys.admin, 'GET', `/projects/${a.projectId}`);
    expect(Object.keys(now.json.settings).sort()).toEqual(['a', 'default_pipeline_id']); // nothing of the refused change
    expect((await call(app, a.keys.admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { a: null, b: half } } })).status).toBe(200);
  });

  it('removes the default pipeline setting when it is set to null; the flag, moved with it, keeps the default where it was', async () => {
    const a = await makeTenant(app);
    const second = await call(app, a.keys.admin, 'POST', '/pipelines', { body: { name: 'Second', statuses: [{ name: 'Open', kind: 'open' }] } });
    expect(second.status, JSON.stringify(second.json)).toBe(201);
    const moved = await call(app, a.keys.admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { default_pipeline_id: second.json.id } } });
    expect(moved.json.settings.default_pipeline_id).toBe(second.json.id);
    const listed = async () => Object.fromEntries((await call(app, a.keys.admin, 'GET', '/pipelines')).json.data.map((p: { id: string; is_default: boolean }) => [p.id, p.is_default]));
    expect(await listed()).toEqual({ [a.pipelineId]: false, [second.json.id]: true });

    const cleared = await call(app, a.keys.admin, 'PATCH', `/projects/${a.projectId}`, { body: { settings: { default_pipeline_id: null } } });
    expect(cleared.status).toBe(200);
    expect(cleared.json.settings).not.toHaveProperty('default_pipeline_id');
    // The setting moved the flag too (before, the registration pipeline's flag stood in again,
    // silently moving the default back).
    expect(await listed()).toEqual({ [a.pipelineId]: false, [second.json.id]: true });
  });

  it('does not let an API key create projects', async () => {
    const a = await makeTenant(app);
    const r = await call(app, a.keys.admin, 'POST', '/projects', { body: { name: 'Nope' } });
    expect(r.status).toBe(403);
  });
});
