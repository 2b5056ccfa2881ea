// The OpenAPI document lists every route with its request and response schemas. No validator
// package is installed (and none is added), so this is a structural check of OpenAPI 3.0: the
// version, every route of the route table present with described responses, a schema for every
// request body, parameter and response content, path templates matching their parameters, no
// 3.1-only `type: "null"`, and every $ref resolvable.
import Fastify from 'fastify';
import { describe, expect, it } from 'vitest';
import { authPlugin, routeTable } from '../../src/http/auth.ts';
import type { AppDeps } from '../../src/http/app.ts';
import { startApp } from './harness.ts';

const { app } = await startApp();
const doc = (await app.inject({ method: 'GET', url: '/openapi.json' })).json();

const toOpenApiPath = (url: string) => url.replace(/:([A-Za-z0-9_]+)/g, '{$1}');

function* walk(node: unknown, path: string): Generator<[string, any]> {
  if (node && typeof node === 'object') {
    yield [path, node];
    for (const [k, v] of Object.entries(node)) yield* walk(v, `${path}/${k}`);
  }
}

function resolvePointer(ref: string): unknown {
  return ref
    .slice(2)
    .split('/')
    .map((p) => p.replace(/~1/g, '/').replace(/~0/g, '~'))
    .reduce<any>((n, key) => (n === undefined ? undefined : n[key]), doc);
}

describe('GET /openapi.json', () => {
  it('is an OpenAPI 3.0 document with info and security schemes', () => {
    expect(doc.openapi).toMatch(/^3\.0\.\d+$/);
    expect(doc.info).toMatchObject({ title: expect.any(String), version: expect.any(String) });
    expect(Object.keys(doc.components.securitySchemes).sort()).toEqual(['apiKey', 'bearer']);
    expect(doc.paths).toBeTypeOf('object');
  });

  it('lists every route of the route table with its schemas', () => {
    const problems: string[] = [];
    const table = routeTable(app);
    expect(table.length).toBeGreaterThan(10);
    for (const r of table) {
      if ((r.schema as any)?.hide) continue;
      const path = toOpenApiPath(r.url);
      const op = doc.paths[path]?.[r.method.toLowerCase()];
      const where = `${r.method} ${path}`;
      if (!op) {
        problems.push(`${where}: missing`);
        continue;
      }
      if (!op.summary) problems.push(`${where}: no summary`);
      const responses = Object.entries<any>(op.responses ?? {});
      if (!responses.some(([s]) => /^2\d\d$/.test(s))) problems.push(`${where}: no success response`);
      for (const [status, res] of responses) {
        if (!res.description) problems.push(`${where} ${status}: no description`);
        for (const [type, media] of Object.entries<any>(res.content ?? {})) if (!media.schema) problems.push(`${where} ${status} ${type}: no schema`);
        if (/^2\d\d$/.test(status) && status !== '204' && !res.content) problems.push(`${where} ${status}: no response schema`);
      }
      const declared = (op.parameters ?? []).filter((p: any) => p.in === 'path').map((p: any) => p.name);
      if (declared.sort().join() !== [...r.params].sort().join()) problems.push(`${where}: path parameters ${declared} vs ${r.params}`);
      for (const p of op.parameters ?? []) if (!p.schema) problems.push(`${where}: parameter ${p.name} has no schema`);
      if ((r.schema as any)?.body && !op.requestBody?.content?.['application/json']?.schema) problems.push(`${where}: no request body schema`);
      if (r.public && !(Array.isArray(op.security) && op.security.length === 0)) problems.push(`${where}: public but not marked security: []`);
    }
    expect(problems).toEqual([]);
  });

  it('resolves every $ref and uses no OpenAPI 3.1-only null type', () => {
    const bad: string[] = [];
    for (const [at, node] of walk(doc, '#')) {
      if (typeof node.$ref === 'string' && (!node.$ref.startsWith('#/') || resolvePointer(node.$ref) === undefined)) bad.push(`${at}: $ref ${node.$ref}`);
      if (node.type === 'null' || (Array.isArray(node.type) && node.type.includes('null'))) bad.push(`${at}: type null (use Nullable())`);
    }
    expect(bad).toEqual([]);
  });

  it("declares a message's error: null or {code, title, message, details}, on the message and in its list", () => {
    const deref = (node: any): any => (node && typeof node.$ref === 'string' ? deref(resolvePointer(node.$ref)) : node);
    const ok = (path: string) => deref(doc.paths[path].get.responses['200'].content['application/json'].schema);
    for (const message of [ok('/api/v1/messages/{id}'), deref(ok('/api/v1/messages').properties.data.items)]) {
      const error = deref(message.properties.error);
      expect(error).toMatchObject({ type: 'object', nullable: true, required: expect.arrayContaining(['code', 'title', 'message', 'details']) });
      expect(deref(error.properties.code)).toMatchObject({ type: 'string', nullable: true });
      expect(deref(error.properties.message)).toMatchObject({ type: 'string' });
      expect(deref(error.properties.message).nullable).toBeUndefined();
      expect(message.required).toContain('error');
    }
  });

  it('is served as Swagger UI at /docs', async () => {
    const r = await app.inject({ method: 'GET', url: '/docs/' });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toMatch(/text\/html/);
  });
});

describe('the route guard', () => {
  const bare = async () => {
    const f = Fastify();
    await authPlugin(f, {} as AppDeps);
    return f;
  };
  const response = { response: { 200: { type: 'object' } } };

  it('refuses a route that declares neither a permission nor public', async () => {
    const f = await bare();
    expect(() => f.get('/sneaky', { schema: response }, async () => ({}))).toThrow(/config\.permission/);
  });

  it('refuses an unknown permission, a route without response schemas, and idempotent GETs', async () => {
    const f = await bare();
    expect(() => f.get('/a', { schema: response, config: { permission: 'everything' as any } }, async () => ({}))).toThrow(/config\.permission/);
    expect(() => f.get('/b', { config: { permission: 'contacts.read' } }, async () => ({}))).toThrow(/response schemas/);
    expect(() => f.get('/c', { schema: response, config: { permission: 'contacts.read', idempotent: true } }, async () => ({}))).toThrow(/idempotent/);
    expect(() => f.get('/d/:id', { schema: response, config: { permission: 'contacts.read' } }, async () => ({}))).toThrow(/params schema/);
  });

  it('accepts a declared route and records it in the route table', async () => {
    const f = await bare();
    f.get('/ok', { schema: response, config: { permission: 'contacts.read' } }, async () => ({}));
    expect(routeTable(f).map((r) => `${r.method} ${r.url} ${r.permission}`)).toEqual(['GET /ok contacts.read']);
  });
});
