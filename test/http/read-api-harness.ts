// The read API tests' view of the app (built by harness.ts): a tenant is one registered project
// and its admin key, with a call() that sends that key; plus page walking and outbox reads.
import type { FastifyInstance, InjectOptions } from 'fastify';
import type { Database } from '../../src/db/database.ts';
import { call, register, startApp as startTestApp, type Reply } from './harness.ts';

export type Tenant = {
  projectId: string;
  key: string;
  /** Sends a request with this tenant's key; `body` is JSON. */
  call(method: InjectOptions['method'], url: string, body?: unknown): Promise<Reply>;
};

export async function startApp(): Promise<{ app: FastifyInstance; db: Database }> {
  const { app, db } = await startTestApp();
  return { app, db };
}

export async function registerTenant(app: FastifyInstance): Promise<Tenant> {
  const r = await register(app);
  if (r.status !== 201) throw new Error(`register answered ${r.status}: ${r.body}`);
  return asTenant(app, r.json.project.id, r.json.api_key.key);
}

export function asTenant(app: FastifyInstance, projectId: string, key: string): Tenant {
  return { projectId, key, call: (method, url, body) => call(app, key, method, url, { body }) };
}

/** Follows next_cursor to the end; returns every item in the order served and the page count. */
export async function walkPages(t: Tenant, url: string, limit: number): Promise<{ items: any[]; pages: number }> {
  const items: any[] = [];
  let cursor: string | null = null;
  let pages = 0;
  do {
    const sep = url.includes('?') ? '&' : '?';
    const r = await t.call('GET', `${url}${sep}limit=${limit}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    if (r.status !== 200) throw new Error(`GET ${url} answered ${r.status}: ${JSON.stringify(r.json)}`);
    items.push(...r.json.data);
    cursor = r.json.next_cursor;
    pages++;
    if (pages > 100) throw new Error('pagination does not end');
  } while (cursor);
  return { items, pages };
}

/** The outbox rows of one aggregate, oldest first (what the relay will publish). */
export async function eventsOf(db: Database, aggregateId: string): Promise<Array<{ type: string; project_id: string; data: any }>> {
  const r = await db.query('SELECT type, project_id, data FROM outbox WHERE aggregate_id = $1 ORDER BY seq', [aggregateId]);
  return r.rows as Array<{ type: string; project_id: string; data: any }>;
}
