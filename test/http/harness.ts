// The app as the accounts and isolation tests use it: a fresh migrated database and broker, the
// real HTTP app, and tenants created through the public API (register, then a key per role).
import type { FastifyInstance, InjectOptions } from 'fastify';
import { loadConfig } from '../../src/config.ts';
import type { Broker } from '../../src/broker/broker.ts';
import { allQueues } from '../../src/broker/topology.ts';
import type { Database } from '../../src/db/database.ts';
import { buildApp } from '../../src/http/app.ts';
import { ROLES, type Role } from '../../src/domain/permissions.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { defaultBrokerKind, makeTestBroker } from '../support/brokers.ts';
import { makeTestDb, onCleanup, uniqueName } from '../support/env.ts';

export const PASSWORD = 'correct horse battery staple';

export type TestApp = { app: FastifyInstance; db: Database; broker: Broker };

/**
 * `wrap` gives the app its own view of the database and broker (a fault test's wrappers that fail
 * on cue); the returned db and broker are the real ones.
 */
export async function startApp(env: Record<string, string> = {}, wrap: { db?: (db: Database) => Database; broker?: (b: Broker) => Broker } = {}): Promise<TestApp> {
  const { db } = await makeTestDb();
  const broker = await makeTestBroker(defaultBrokerKind(), db);
  await broker.declareQueues(allQueues()); // as start-up does
  const config = loadConfig({ LOG_LEVEL: 'silent', ...env });
  const app = await buildApp({ config, db: wrap.db?.(db) ?? db, broker: wrap.broker?.(broker) ?? broker, logger: silentLogger, secretKey: 'k'.repeat(64) });
  await app.ready();
  onCleanup(() => app.close());
  return { app, db, broker };
}

export type Reply = { status: number; json: any; headers: Record<string, unknown>; body: string };

/** One request; `credential` goes in Authorization: Bearer. */
export async function call(
  app: FastifyInstance,
  credential: string | undefined,
  method: InjectOptions['method'],
  url: string,
  opts: { body?: unknown; headers?: Record<string, string>; query?: Record<string, string> } = {},
): Promise<Reply> {
  const r = await app.inject({
    method,
    url: url.startsWith('/api/') ? url : `/api/v1${url}`,
    ...(opts.query ? { query: opts.query } : {}),
    headers: { ...(credential ? { authorization: `Bearer ${credential}` } : {}), ...opts.headers },
    ...(opts.body === undefined ? {} : { payload: opts.body as InjectOptions['payload'] }),
  });
  let json: any;
  try {
    json = r.body ? r.json() : undefined;
  } catch {
    json = undefined;
  }
  return { status: r.statusCode, json, headers: r.headers, body: r.body };
}

export type Tenant = {
  email: string;
  userId: string;
  projectId: string;
  pipelineId: string;
  /** An API key of each role in this tenant's project (admin is the one from registration). */
  keys: Record<Role, string>;
  keyIds: Record<Role, string>;
};

export async function register(app: FastifyInstance, email = `${uniqueName('u')}@example.com`, password = PASSWORD): Promise<Reply> {
  return call(app, undefined, 'POST', '/auth/register', { body: { name: 'Test Person', email, password } });
}

/** Registers a user and creates one API key per role in their project. */
export async function makeTenant(app: FastifyInstance): Promise<Tenant> {
  const email = `${uniqueName('u')}@example.com`;
  const r = await register(app, email);
  if (r.status !== 201) throw new Error(`register answered ${r.status}: ${r.body}`);
  const admin: string = r.json.api_key.key;
  const keys = { admin } as Record<Role, string>;
  const keyIds = { admin: r.json.api_key.id } as Record<Role, string>;
  for (const role of ROLES.filter((x) => x !== 'admin')) {
    const k = await call(app, admin, 'POST', '/api-keys', { body: { name: `${role} key`, role } });
    if (k.status !== 201) throw new Error(`creating a ${role} key answered ${k.status}: ${k.body}`);
    keys[role] = k.json.key;
    keyIds[role] = k.json.id;
  }
  return { email, userId: r.json.user.id, projectId: r.json.project.id, pipelineId: r.json.project.settings.default_pipeline_id, keys, keyIds };
}
