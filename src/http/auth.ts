// Authentication and authorization for /api/v1, and the rule that no route escapes them.
//
// - onRoute: every /api/v1 route declares `config.permission` (an action of permissions.ts) or
//   `config.public: true`, and response schemas; otherwise start-up fails. Each route is recorded
//   in the route table that the isolation tests iterate, so a new route is tested without anyone
//   remembering to.
// - onRequest of every route that is not public (attached to the route when it registers, so a
//   public route such as the provider ingress runs no authentication hook at all):
//   `Authorization: Bearer <vtr_ key | login token>` or `X-API-Key` → `req.auth`, then
//   `can(role, permission)`, before the body is even read.
import type { FastifyInstance, FastifyRequest, FastifySchema, RouteOptions } from 'fastify';
import type { AppDeps } from './app.ts';
import { API_KEY_PREFIX, secretHash } from '../domain/credentials.ts';
import { can, isAction, type Action, type Caller } from '../domain/permissions.ts';
import { isUuid } from '../domain/ids.ts';
import { AppError, invalid, notFound } from '../errors.ts';
import { makeAccountsService } from '../services/accounts.service.ts';
import { makeApiKeysService } from '../services/api-keys.service.ts';
import { attachIdempotency } from './idempotency.ts';

declare module 'fastify' {
  interface FastifyContextConfig {
    permission?: Action;
    public?: boolean;
    idempotent?: boolean;
  }
  interface FastifyRequest {
    /** The resolved caller; set on every route that is not public. */
    auth: Caller;
  }
  interface FastifyInstance {
    authCache: AuthCache;
  }
}

export type RouteInfo = {
  method: string;
  /** Full Fastify path, e.g. /api/v1/api-keys/:id */
  url: string;
  permission?: Action;
  public: boolean;
  idempotent: boolean;
  /** Names of the path parameters. */
  params: string[];
  schema: FastifySchema | undefined;
};

// Keyed by the http.Server, which the root instance and every encapsulated child share.
const tables = new WeakMap<object, RouteInfo[]>();

/** Every /api/v1 route of a built app, with its access rule (collected at registration). */
export function routeTable(app: FastifyInstance): readonly RouteInfo[] {
  return tables.get(app.server) ?? [];
}

function guardRoute(opts: RouteOptions, table: RouteInfo[]): void {
  const methods = [opts.method].flat().map(String);
  if (methods.every((m) => m === 'HEAD')) return; // Fastify's automatic twin of a GET
  const where = `${methods.join(',')} ${opts.url}`;
  const cfg = opts.config ?? {};
  if (cfg.public === true && cfg.permission !== undefined) throw new Error(`${where}: a route is either public or needs a permission, not both`);
  if (cfg.public !== true && !isAction(cfg.permission)) {
    throw new Error(`${where}: every /api/v1 route must declare config.permission (an action in src/domain/permissions.ts) or config.public: true`);
  }
  if (cfg.idempotent && (cfg.public || !methods.includes('POST'))) throw new Error(`${where}: config.idempotent is for authenticated POST routes`);
  const schema = opts.schema as (FastifySchema & { hide?: boolean }) | undefined;
  if (!schema?.hide && !schema?.response) throw new Error(`${where}: declare response schemas (they serialize the response and document the route)`);
  const params = [...opts.url.matchAll(/:([A-Za-z0-9_]+)/g)].map((m) => m[1]);
  if (params.length > 0 && !schema?.params) throw new Error(`${where}: declare a params schema for ${params.join(', ')}`);
  for (const method of methods) {
    table.push({ method, url: opts.url, permission: cfg.permission, public: cfg.public === true, idempotent: cfg.idempotent === true, params, schema });
  }
}

// ---- credential cache -----------------------------------------------------------------------

/** How long a resolved credential is trusted without asking the database again. */
export const AUTH_CACHE_TTL_MS = 5_000;
const AUTH_CACHE_MAX = 10_000;
const TOUCH_EVERY_MS = 60_000;

type Entry = { caller: Caller; until: number; touchedAt: number };

/**
 * A short-lived, per-process memo of credential → caller. Revocations and membership changes made
 * through this process forget the affected entries at once; other processes notice within the TTL.
 */
export type AuthCache = ReturnType<typeof makeAuthCache>;

export function makeAuthCache(now = () => Date.now()) {
  const entries = new Map<string, Entry>();
  // Bumped by every forget(): a caller read from the database before a revocation committed must
  // not be stored after the revocation dropped the entries (it would be trusted for another TTL,
  // long enough to mint a new key with a revoked one).
  let generation = 0;
  return {
    get(key: string): Entry | undefined {
      const e = entries.get(key);
      if (e && e.until > now()) return e;
      if (e) entries.delete(key);
      return undefined;
    },
    /** To pass to set(): taken before the credential is read from the database. */
    generation: () => generation,
    /** Stores `e` unless a forget() came since `readAt` (a generation()). */
    set(key: string, e: Entry, readAt: number): void {
      if (readAt !== generation) return;
      if (entries.size >= AUTH_CACHE_MAX) entries.delete(entries.keys().next().value!);
      entries.set(key, e);
    },
    /** Drops every entry of this key, token, user or project. */
    forget(match: { apiKeyId?: string; tokenId?: string; userId?: string; projectId?: string }): void {
      generation++;
      for (const [k, { caller: c }] of entries) {
        if (
          (match.apiKeyId && c.apiKeyId === match.apiKeyId) ||
          (match.tokenId && c.tokenId === match.tokenId) ||
          (match.userId && c.userId === match.userId && (!match.projectId || c.projectId === match.projectId)) ||
          (match.projectId && !match.userId && c.projectId === match.projectId)
        ) {
          entries.delete(k);
        }
      }
    },
  };
}

// ---- the plugin -------------------------------------------------------------------------------

const unauthorized = (detail: string) => new AppError('unauthorized', detail, undefined, { 'www-authenticate': 'Bearer' });

function readCredential(req: FastifyRequest): string {
  const authz = req.headers.authorization;
  if (typeof authz === 'string' && authz.trim() !== '') {
    const m = /^Bearer\s+(\S+)\s*$/i.exec(authz);
    if (!m) throw unauthorized('use "Authorization: Bearer <API key or login token>"');
    return m[1];
  }
  const key = req.headers['x-api-key'];
  if (typeof key === 'string' && key.trim() !== '') {
    // The header of API keys only: a login token there would travel where proxies and logs expect
    // a long-lived key, and is told where it goes.
    if (!key.trim().startsWith(API_KEY_PREFIX)) throw unauthorized(`X-API-Key takes an API key (${API_KEY_PREFIX}…); send a login token as Authorization: Bearer <token>`);
    return key.trim();
  }
  throw unauthorized('send an API key (Authorization: Bearer vtr_… or X-API-Key) or a login token (Authorization: Bearer …)');
}

/** First in the /api/v1 route list: installs the route guard, authentication and idempotency. */
export async function authPlugin(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const accounts = makeAccountsService(deps);
  const apiKeys = makeApiKeysService(deps);
  const cache = makeAuthCache();
  const table: RouteInfo[] = [];
  tables.set(app.server, table);

  app.decorate('authCache', cache);
  app.decorateRequest('auth', null as unknown as Caller);
  app.addHook('onRoute', (opts) => {
    guardRoute(opts, table);
    // Every route that is not public gets the authentication hook, HEAD twins of GET routes too
    // (Fastify registers them from a copy of the options taken before this hook ran).
    // guardRoute has made sure such a route names a permission (a HEAD twin shares its GET's).
    if (opts.config?.public !== true) opts.onRequest = [...[opts.onRequest ?? []].flat(), authenticateFor(opts.config!.permission!)];
    if (opts.config?.idempotent === true) attachIdempotency(opts, deps);
  });

  async function resolve(secret: string, projectHeader: string | undefined): Promise<Caller> {
    const cacheKey = `${secretHash(secret)}|${projectHeader ?? ''}`;
    const hit = cache.get(cacheKey);
    if (hit) {
      if (hit.caller.apiKeyId && Date.now() - hit.touchedAt > TOUCH_EVERY_MS) {
        hit.touchedAt = Date.now();
        await apiKeys.touch(hit.caller.apiKeyId);
      }
      return hit.caller;
    }
    const readAt = cache.generation();
    // A revocation committed after this read is heard within the cache's lifetime counted from
    // here, not from after the lookup (which may wait on the revoking transaction's lock).
    const until = Date.now() + AUTH_CACHE_TTL_MS;
    if (secret.startsWith(API_KEY_PREFIX)) {
      const found = await apiKeys.resolve(secret);
      if (!found) throw unauthorized('the API key is unknown or revoked');
      // A key belongs to one project: naming another one with X-Project-ID finds nothing.
      if (projectHeader !== undefined && projectHeader !== found.caller.projectId) throw notFound('project');
      let touchedAt = found.lastUsedAt?.getTime() ?? 0;
      if (Date.now() - touchedAt > TOUCH_EVERY_MS) {
        await apiKeys.touch(found.caller.apiKeyId!);
        touchedAt = Date.now();
      }
      cache.set(cacheKey, { caller: found.caller, until, touchedAt }, readAt);
      return found.caller;
    }
    const found = await accounts.resolveLoginToken(secret, projectHeader);
    if (!found) throw unauthorized('the login token is unknown, revoked or expired');
    cache.set(cacheKey, { caller: found.caller, until: Math.min(until, found.expiresAt.getTime()), touchedAt: Date.now() }, readAt);
    return found.caller;
  }

  /** The onRequest hook of a route that needs `permission`. */
  function authenticateFor(permission: Action) {
    return async (req: FastifyRequest): Promise<void> => {
      const secret = readCredential(req);
      const header = req.headers['x-project-id'];
      // Checked here, before the header schema would be: a value that is no uuid names no project,
      // and is told so, rather than answered with the 404 of an unknown one. An empty one too (a
      // workflow's unset variable): taken for "none", it would act in the user's first project.
      if (header !== undefined && !isUuid(header)) {
        throw invalid('X-Project-ID must be a project id (a UUID); leave the header out for your first project', [{ field: 'X-Project-ID', message: 'must be a UUID' }]);
      }
      // A uuid in any case names the same project (ids are compared as text below).
      const caller = await resolve(secret, typeof header === 'string' ? header.toLowerCase() : undefined);
      if (!can(caller.role, permission)) throw new AppError('forbidden', `the ${caller.role} role may not do this (needs ${permission})`);
      req.auth = caller;
    };
  }

  app.decorateRequest('idempotency', null);
}
