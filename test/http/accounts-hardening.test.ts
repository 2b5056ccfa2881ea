// Accounts after the security review: a password stored at an older scrypt cost is rehashed at
// the current one by the login that proves it, and an API key shows who created it — the user
// signed in, or the key used — so a removed member's keys can still be traced.
import { randomBytes, scrypt } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { hashPassword, verifyPassword } from '../../src/domain/credentials.ts';
import { makeLogger } from '../../src/observability/logger.ts';
import { makeAccountsService } from '../../src/services/accounts.service.ts';
import { uniqueName } from '../support/env.ts';
import { wrapDatabase } from '../support/wrapped-db.ts';
import { call, makeTenant, PASSWORD, register, startApp } from './harness.ts';

const { app, db } = await startApp();

/** A hash in the stored format made with other parameters (by default N = 2^14: half today's cost). */
async function hashWith(password: string, N = 16384, keylen = 32): Promise<string> {
  const salt = randomBytes(16);
  const key = await new Promise<Buffer>((resolve, reject) =>
    scrypt(password.normalize('NFKC'), salt, keylen, { N, r: 8, p: 1, maxmem: 64 * 1024 * 1024 }, (err, k) => (err ? reject(err) : resolve(k))),
  );
  return ['scrypt', N, 8, 1, salt.toString('base64url'), key.toString('base64url')].join('$');
}
const oldCostHash = (password: string) => hashWith(password);

/** The `scrypt$N$r$p` head of a hash made now. */
const currentParams = async () => (await hashPassword('any password')).split('$').slice(0, 4).join('$');

const storedHash = async (email: string) => (await db.query('SELECT password_hash FROM users WHERE email = $1', [email])).rows[0].password_hash as string;

/** A registered user whose password is stored at the older cost (or as `stored` makes it). */
async function userWithOldHash(stored = oldCostHash): Promise<{ email: string; userId: string; old: string }> {
  const email = `${uniqueName('old')}@example.com`;
  const r = await register(app, email);
  expect(r.status).toBe(201);
  const old = await stored(PASSWORD);
  await db.query('UPDATE users SET password_hash = $2 WHERE email = $1', [email, old]);
  return { email, userId: r.json.user.id, old };
}

const login = (email: string, password: string, ip = '192.0.2.10') =>
  app.inject({ method: 'POST', url: '/api/v1/auth/login', payload: { email, password }, remoteAddress: ip });

describe('password rehash on login', () => {
  it('stores the password at the current cost after a login with a hash made at a lower one', async () => {
    const u = await userWithOldHash();
    expect(u.old.startsWith('scrypt$16384$8$1$')).toBe(true);
    expect(u.old.startsWith(`${await currentParams()}$`)).toBe(false);

    const r = await login(u.email, PASSWORD);
    expect(r.statusCode).toBe(200);
    const now = await storedHash(u.email);
    expect(now.startsWith(`${await currentParams()}$`)).toBe(true);
    expect(await verifyPassword(PASSWORD, now)).toBe(true);
    expect(await verifyPassword('not the password', now)).toBe(false);
    // And the new hash logs in as well (and is left as it is: nothing to upgrade).
    expect((await login(u.email, PASSWORD)).statusCode).toBe(200);
    expect(await storedHash(u.email)).toBe(now);
  });

  it('leaves a hash stronger than today\'s as it is (a newer process may have stored it during an upgrade)', async () => {
    const u = await userWithOldHash((password) => hashWith(password, 32768, 64));
    expect((await login(u.email, PASSWORD, '192.0.2.12')).statusCode).toBe(200);
    expect(await storedHash(u.email)).toBe(u.old);
  });

  it('changes nothing on a wrong password', async () => {
    const u = await userWithOldHash();
    const r = await login(u.email, 'a wrong password', '192.0.2.11');
    expect(r.statusCode).toBe(401);
    expect(await storedHash(u.email)).toBe(u.old);
  });

  it('lets the login through, and logs, when the new hash cannot be stored', async () => {
    const u = await userWithOldHash();
    const failing = new Proxy(db, {
      get(target, prop) {
        if (prop === 'query') {
          return (sql: string, params?: unknown[]) =>
            /^\s*UPDATE users SET password_hash/i.test(sql) ? Promise.reject(new Error('disk full')) : target.query(sql, params);
        }
        const v = Reflect.get(target, prop);
        return typeof v === 'function' ? v.bind(target) : v;
      },
    }) as Database;
    const lines: any[] = [];
    const sink = { write: (line: string) => void lines.push(JSON.parse(line)) };
    const accounts = makeAccountsService({ db: failing, config: { loginTokenTtlHours: 1 }, logger: makeLogger('warn', {}, sink) });

    const r = await accounts.login({ email: u.email, password: PASSWORD, ip: '192.0.2.12' });
    expect(r.user.id).toBe(u.userId);
    expect(r.token).toMatch(/^vtl_/);
    expect(await storedHash(u.email)).toBe(u.old);
    expect(lines).toEqual([expect.objectContaining({ level: 40, user_id: u.userId, err: expect.objectContaining({ message: 'disk full' }) })]);
  });
});

describe('who created an API key', () => {
  it('names the signed-in user, or the key used, on create, list and /auth/me — also after the member is removed', async () => {
    const a = await makeTenant(app);
    const b = await makeTenant(app);
    const added = await call(app, a.keys.admin, 'POST', `/projects/${a.projectId}/members`, { body: { email: b.email, role: 'admin' } });
    expect(added.status).toBe(201);
    const token = (await login(b.email, PASSWORD)).json().token;
    const inA = { headers: { 'x-project-id': a.projectId } };

    const k1 = await call(app, token, 'POST', '/api-keys', { ...inA, body: { name: 'made by B', role: 'admin' } });
    expect(k1.status).toBe(201);
    expect(k1.json).toMatchObject({ created_by: b.userId, created_by_key_id: null });
    const k2 = await call(app, k1.json.key, 'POST', '/api-keys', { body: { name: 'made by B’s key', role: 'viewer' } });
    expect(k2.status).toBe(201);
    expect(k2.json).toMatchObject({ created_by: null, created_by_key_id: k1.json.id });
    const me = await call(app, k2.json.key, 'GET', '/auth/me');
    expect(me.json.api_key).toMatchObject({ id: k2.json.id, created_by: null, created_by_key_id: k1.json.id });

    expect((await call(app, a.keys.admin, 'DELETE', `/projects/${a.projectId}/members/${b.userId}`)).status).toBe(204);
    const list = await call(app, a.keys.admin, 'GET', '/api-keys');
    expect(list.status).toBe(200);
    const byId = new Map(list.json.data.map((k: any) => [k.id, k]));
    expect(byId.get(k1.json.id)).toMatchObject({ created_by: b.userId, created_by_key_id: null });
    expect(byId.get(k2.json.id)).toMatchObject({ created_by: null, created_by_key_id: k1.json.id });
    // The key made at registration: its user, no key.
    expect(byId.get(a.keyIds.admin)).toMatchObject({ created_by: a.userId, created_by_key_id: null });
    // The keys makeTenant made with the registration key.
    expect(byId.get(a.keyIds.viewer)).toMatchObject({ created_by: null, created_by_key_id: a.keyIds.admin });
  });

  it('documents created_by and created_by_key_id in /openapi.json wherever an ApiKey is answered', async () => {
    const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();
    const json = (path: string, method: string, status: string) => doc.paths[`/api/v1${path}`][method].responses[status].content['application/json'].schema;
    const shapes = {
      list: json('/api-keys', 'get', '200').properties.data.items,
      create: json('/api-keys', 'post', '201'),
      register: json('/auth/register', 'post', '201').properties.api_key,
      me: json('/auth/me', 'get', '200').properties.api_key,
    };
    for (const [where, shape] of Object.entries<any>(shapes)) {
      for (const field of ['created_by', 'created_by_key_id']) {
        expect(shape.properties[field], `${where} ${field}`).toMatchObject({ type: 'string', format: 'uuid', nullable: true, description: expect.any(String) });
        expect(shape.required, `${where} ${field}`).toContain(field);
      }
    }
  });
});

describe('a login that overlaps a password change', () => {
  it('does not keep a token made with the old password once the change has committed', async () => {
    const a = await makeTenant(app);
    // The login pauses after checking the password, before it stores its token: the change then
    // commits in between, as a login racing the owner's change would.
    let pause!: () => void;
    const paused = new Promise<void>((r) => (pause = r));
    let go!: () => void;
    const resume = new Promise<void>((r) => (go = r));
    let held = false;
    const hold = async () => {
      if (held) return;
      held = true;
      pause();
      await resume;
    };
    const slowed = wrapDatabase(db, {
      query: async (sql, params) => {
        if (/INSERT INTO auth_tokens/.test(sql)) await hold();
        return db.query(sql, params);
      },
      transaction: async (fn, setup) => {
        await hold();
        return db.transaction(fn, setup);
      },
    });
    const racing = makeAccountsService({ db: slowed, config: { loginTokenTtlHours: 1 } });
    const login = racing.login({ email: a.email, password: PASSWORD, ip: '192.0.2.55' }).then(
      (r) => r.token,
      (err: Error) => err,
    );
    await paused;
    const owner = (await call(app, undefined, 'POST', '/auth/login', { body: { email: a.email, password: PASSWORD } })).json.token as string;
    const changed = await call(app, owner, 'POST', '/auth/password', { body: { current_password: PASSWORD, new_password: 'the owner changed it' } });
    expect(changed.status).toBe(200);
    go();
    const outcome = await login;
    if (typeof outcome === 'string') expect((await call(app, outcome, 'GET', '/auth/me')).status).toBe(401); // stored, then revoked
    else expect(outcome.message).toMatch(/email or password is wrong/); // refused
    expect((await call(app, changed.json.token, 'GET', '/auth/me')).status).toBe(200);
  });
});
