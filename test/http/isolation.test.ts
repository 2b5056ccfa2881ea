// Tenant isolation and roles, generated from the app's route table: every /api/v1 route that
// exists when this file runs is tested, including routes added after it was written. How to point
// a new route at an A-owned resource: isolation-fixtures.ts.
import { describe, expect, it } from 'vitest';
import { routeTable, type RouteInfo } from '../../src/http/auth.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { can, PERMISSIONS, ROLES } from '../../src/domain/permissions.ts';
import { call, makeTenant, startApp } from './harness.ts';
import { bodies, conversationOfA, resources, seeds, type World } from './isolation-fixtures.ts';
import { sample, sampleQuery } from './sample.ts';

const { app, db, broker } = await startApp();
const world: World = { app, db, broker, a: await makeTenant(app), b: await makeTenant(app) };
const aIds = new Set<string>();
for (const seed of seeds) for (const id of await seed(world)) aIds.add(id);

const routes = routeTable(app).filter((r) => !r.public);
const label = (r: RouteInfo) => `${r.method} ${r.url}`;

/** The fixture whose prefix is the longest match of the route's url. */
function resourceFor(r: RouteInfo) {
  const keys = Object.keys(resources).filter((k) => r.url === k || r.url.startsWith(`${k}/`));
  keys.sort((x, y) => y.length - x.length);
  return keys[0] ? resources[keys[0]] : undefined;
}

function fillUrl(url: string, params: Record<string, string>): string {
  return url.replace(/:([A-Za-z0-9_]+)/g, (_, name: string) => params[name] ?? uuidv7());
}

function bodyFor(r: RouteInfo): unknown {
  const given = bodies[label(r)];
  if (given) return given(world);
  const schema = (r.schema as any)?.body;
  return schema ? sample(schema) : undefined;
}

const queryFor = (r: RouteInfo) => sampleQuery((r.schema as any)?.querystring);

describe('the route table', () => {
  it('holds every /api/v1 route with its access rule', () => {
    const urls = routes.map(label);
    for (const expected of ['GET /api/v1/api-keys', 'DELETE /api/v1/api-keys/:id', 'GET /api/v1/projects/:id', 'GET /api/v1/admin/queues', 'GET /api/v1/events']) {
      expect(urls).toContain(expected);
    }
    for (const r of routes) expect(PERMISSIONS[r.permission!], label(r)).toBeDefined();
  });

  it('guards no state-changing route with a read permission', () => {
    const writes = routes.filter((r) => r.method !== 'GET');
    const misfiled = writes.filter((r) => r.permission!.endsWith('.read')).map(label);
    expect(misfiled).toEqual([]);
  });
});

describe('no route that is not public answers a caller without a credential', () => {
  // Authentication is attached to each route as it registers; a route (or the HEAD twin Fastify
  // makes of a GET) that missed it would answer here with something other than 401.
  for (const r of routes) {
    const methods = r.method === 'GET' ? ['GET', 'HEAD'] : [r.method];
    for (const method of methods) {
      it(`${method} ${r.url}`, async () => {
        const res = await call(app, undefined, method as any, fillUrl(r.url, {}), { query: queryFor(r) });
        expect(res.status, res.body).toBe(401);
        if (method !== 'HEAD') expect(res.json.code).toBe('unauthorized');
      });
    }
  }

  it('while the public ones (provider webhooks, auth) run without one', () => {
    const open = routeTable(app).filter((r) => r.public).map(label);
    expect(open).toContain('POST /api/v1/webhooks/waha/:channel_id');
    expect(open.filter((u) => !/\/(webhooks\/(waha|whatsapp)|auth)\//.test(u))).toEqual([]);
  });
});

describe("B's admin key on A's resources answers 404", () => {
  for (const r of routes.filter((x) => x.params.length > 0)) {
    const fixture = resourceFor(r);
    it(`${label(r)}${fixture ? '' : ' (random id: no fixture in isolation-fixtures.ts)'}`, async () => {
      const params = fixture ? await fixture(world) : {};
      for (const id of Object.values(params)) aIds.add(id);
      const res = await call(app, world.b.keys.admin, r.method as any, fillUrl(r.url, params), { body: bodyFor(r), query: queryFor(r) });
      if (res.status === 400) {
        throw new Error(`${label(r)}: the generated request did not validate (${res.json?.detail}); add a body fixture in isolation-fixtures.ts`);
      }
      expect(res.status, res.body).toBe(404);
      expect(res.json.code).toBe('not_found');
    });
  }

  it("left A's project, members and keys as they were", async () => {
    const me = await call(app, world.a.keys.viewer, 'GET', '/auth/me');
    expect(me.status).toBe(200);
    expect(me.json.project.name).not.toBe('taken over');
    const members = await call(app, world.a.keys.admin, 'GET', `/projects/${world.a.projectId}/members`);
    expect(members.json.data.map((m: any) => m.user_id)).toEqual([world.a.userId]);
  });
});

describe("B's lists never contain A's rows", () => {
  it("(control: A's own lists show A's rows, so the check below can fail)", async () => {
    const shown = async (url: string) => (await call(app, world.a.keys.admin, 'GET', url)).body;
    const body = (await Promise.all(['/admin/dead-letters', '/admin/parse-errors', '/events', '/api-keys', '/projects'].map(shown))).join('\n');
    const ids = async (sql: string) => (await db.query(sql, [world.a.projectId])).rows.map((x) => x.id as string);
    const expected = [
      world.a.projectId,
      ...Object.values(world.a.keyIds),
      ...(await ids('SELECT id::text AS id FROM dead_letters WHERE project_id = $1')),
      ...(await ids('SELECT id::text AS id FROM parse_errors WHERE project_id = $1')),
      ...(await ids('SELECT id::text AS id FROM outbox WHERE project_id = $1 AND published_at IS NOT NULL')),
    ];
    expect(expected.length).toBeGreaterThan(7);
    expect(expected.filter((id) => !body.includes(id))).toEqual([]);
  });

  for (const r of routes.filter((x) => x.method === 'GET' && x.params.length === 0)) {
    it(label(r), async () => {
      const res = await call(app, world.b.keys.admin, 'GET', r.url, { query: queryFor(r) });
      expect(res.status, res.body).toBe(200);
      const leaked = [...aIds].filter((id) => res.body.includes(id));
      expect(leaked, `${label(r)} shows A's ids to B`).toEqual([]);
    });
  }
});

describe('a query parameter the route does not declare is refused, never passed on', () => {
  // Services build their SQL filters from the caller's project and the path's ids plus the query.
  // A key smuggled into the query (`projectId`, `contactId`…) once overwrote those filters; only
  // row-level security stood behind them. Every route with a query schema must refuse it by name.
  const withQuery = routes.filter((r) => (r.schema as any)?.querystring);
  it('(the app has such routes)', () => expect(withQuery.length).toBeGreaterThan(10));
  for (const r of withQuery) {
    it(label(r), async () => {
      const { contactId } = await conversationOfA(world);
      const fixture = resourceFor(r);
      const params = fixture && r.params.length > 0 ? await fixture(world) : {};
      const query = { ...queryFor(r), projectId: world.a.projectId, contactId };
      const res = await call(app, world.b.keys.admin, r.method as any, fillUrl(r.url, params), { body: bodyFor(r), query });
      expect(res.status, res.body).toBe(400);
      expect(res.json.code).toBe('validation');
      expect(res.json.errors.map((e: any) => e.field).sort()).toEqual(['contactId', 'projectId']);
      expect(res.json.detail).toContain('projectId is not allowed');
    });
  }
});

describe('roles get 403 exactly where permissions.ts says so', () => {
  // A's own keys on A's project: a 403 here can only come from the role. Random ids and no body:
  // an allowed call then stops at 400/404 and changes nothing.
  for (const r of routes) {
    for (const role of ROLES) {
      const allowed = can(role, r.permission!);
      it(`${role} ${allowed ? 'may' : 'may not'} ${label(r)}`, async () => {
        const res = await call(app, world.a.keys[role], r.method as any, fillUrl(r.url, {}), { query: queryFor(r) });
        expect(res.status).not.toBe(401);
        if (allowed) expect(res.status, res.body).not.toBe(403);
        else {
          expect(res.status, res.body).toBe(403);
          expect(res.json.code).toBe('forbidden');
        }
      });
    }
  }
});
