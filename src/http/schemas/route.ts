// `defineRoute`: one declaration per route — access rule, schemas, docs, typed handler. It fills in
// the problem responses a route can give (400/401/403/404/409/413) so the OpenAPI document lists
// them, and types `req.params`, `req.query` and `req.body` from the TypeBox schemas.
//
//   defineRoute(app, {
//     method: 'GET', url: '/contacts/:id', summary: 'Get a contact',
//     permission: 'contacts.read',
//     params: IdParams,
//     response: { 200: Contact },
//     handler: async (req) => present(await contacts.get(req.auth, req.params.id)),
//   });
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema } from 'fastify';
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import type { Action } from '../../domain/permissions.ts';
import { isUuid } from '../../domain/ids.ts';
import { MAX_JSON_DEPTH, findUnusable } from '../../domain/text.ts';
import { invalid } from '../../errors.ts';
import { problemResponse, Uuid } from './common.ts';

type StaticOf<T> = T extends TSchema ? Static<T> : unknown;

export type TypedRequest<P, Q, B> = FastifyRequest<{ Params: StaticOf<P>; Querystring: StaticOf<Q>; Body: StaticOf<B> }>;

/** Exactly one of: the action the caller's role must be allowed (permissions.ts), or public. */
type Access = { permission: Action; public?: never; idempotent?: boolean } | { public: true; permission?: never; idempotent?: never };

export type RouteSpec<P, Q, B> = Access & {
  method: 'GET' | 'POST' | 'PUT' | 'PATCH' | 'DELETE';
  /** Relative to /api/v1, with Fastify params (`/contacts/:id`). */
  url: string;
  summary: string;
  description?: string;
  /** Defaults to the first path segment (`contacts`). */
  tags?: string[];
  params?: P;
  querystring?: Q;
  body?: B;
  /** Success responses (and any problem the defaults do not cover, via problemResponse). */
  response: Record<number, TSchema | ReturnType<typeof problemResponse>>;
  /** Extra problem statuses this route may answer, e.g. `{ 429: 'Too many attempts' }`. */
  problems?: Record<number, string>;
  /** The largest body this route takes, in bytes, when not the server's (BODY_LIMIT). */
  bodyLimit?: number;
  /**
   * The body is optional and the handler checks it itself (a schema would make an empty request a
   * 400): without a body schema the route is not taken for one that takes no body.
   */
  optionalBody?: true;
  handler: (req: TypedRequest<P, Q, B>, reply: FastifyReply) => Promise<unknown>;
};

const IdempotencyHeader = Type.String({
  minLength: 1,
  maxLength: 255,
  description: 'Makes a retried POST safe: the same key and body within 24 h replay the first response',
});
const ProjectHeader = { ...Uuid, description: 'For login tokens: the project to act in (default: your first project)' };

export function defineRoute<P extends TSchema | undefined = undefined, Q extends TSchema | undefined = undefined, B extends TSchema | undefined = undefined>(
  app: FastifyInstance,
  spec: RouteSpec<P, Q, B>,
): void {
  const hasParams = spec.url.includes(':');
  const problems: Record<number, string | undefined> = {
    ...(spec.params || spec.querystring || spec.body ? { 400: 'Invalid request' } : {}),
    ...(spec.public ? {} : { 401: 'Missing, unknown, revoked or expired credential', 403: 'Your role may not do this' }),
    ...(hasParams || !spec.public ? { 404: hasParams ? 'Not found (or another project’s)' : 'Project not found (X-Project-ID)' } : {}),
    ...(spec.idempotent ? { 409: 'Idempotency-Key reused with a different request, or still in progress' } : {}),
    ...(spec.body ? { 413: 'Body larger than 1 MiB' } : {}),
  };
  for (const [status, text] of Object.entries(spec.problems ?? {})) {
    const s = Number(status);
    problems[s] = problems[s] && s === 409 ? `${text}; or ${problems[s]}` : text;
  }
  const response: Record<number, unknown> = {};
  for (const [status, text] of Object.entries(problems)) if (text) response[Number(status)] = problemResponse(text);
  Object.assign(response, spec.response);

  const headers = spec.public
    ? undefined
    : Type.Object({ 'x-project-id': Type.Optional(ProjectHeader), ...(spec.idempotent ? { 'idempotency-key': Type.Optional(IdempotencyHeader) } : {}) });

  const schema: FastifySchema & Record<string, unknown> = {
    summary: spec.summary,
    ...(spec.description ? { description: spec.description } : {}),
    tags: spec.tags ?? [spec.url.split('/')[1] || 'api'],
    ...(spec.params ? { params: spec.params } : {}),
    ...(spec.querystring ? { querystring: closed(spec.querystring) } : {}),
    ...(spec.body ? { body: spec.body } : {}),
    ...(headers ? { headers } : {}),
    response,
    ...(spec.public ? { security: [] } : {}),
  };
  app.route({
    method: spec.method,
    url: spec.url,
    schema,
    preValidation: [
      ...(spec.params && !spec.public ? [lowerCaseIds] : []),
      ...(spec.body || spec.querystring ? [refuseUnusableInput] : []),
      ...(spec.body || spec.optionalBody || spec.public || spec.method === 'GET' ? [] : [refuseBody]),
    ],
    config: spec.public ? { public: true } : { permission: spec.permission, ...(spec.idempotent ? { idempotent: true } : {}) },
    ...(spec.bodyLimit !== undefined ? { bodyLimit: spec.bodyLimit } : {}),
    handler: spec.handler as unknown as (req: FastifyRequest, reply: FastifyReply) => Promise<unknown>,
  });
}

/**
 * Ids in a path are compared as text in places (a project with the caller's, a member with the
 * last admin, cache keys), and a uuid names the same row in any case: they go on in lower case,
 * as the database writes them. (Not on the public routes: the ingress gains no work per webhook.)
 */
function lowerCaseIds(req: FastifyRequest, _reply: FastifyReply, done: () => void): void {
  const params = req.params as Record<string, unknown>;
  for (const [key, value] of Object.entries(params)) if (isUuid(value)) params[key] = value.toLowerCase();
  done();
}

/**
 * PostgreSQL's text and jsonb hold neither U+0000 nor a lone UTF-16 surrogate (`\u0000`,
 * `\ud800` in JSON; `%00` in a query string). Left to the database, either is a server error; here
 * it is a 400 naming the field. So is JSON nested deeper than MAX_JSON_DEPTH, which recursion
 * further on (JSON.stringify, the Idempotency-Key hash) could not take. Runs before the schema,
 * on what the parsers produced.
 */
function refuseUnusableInput(req: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void): void {
  const found = findUnusable(req.body) ?? findUnusable(req.query);
  if (found === undefined) return done();
  const field = found.path || undefined;
  if (found.problem === 'depth') {
    return done(invalid(`${found.path || 'body'} nests deeper than ${MAX_JSON_DEPTH} levels`, [{ field, message: `must not nest deeper than ${MAX_JSON_DEPTH} levels` }]));
  }
  done(invalid(`${found.path || 'body'} contains a character that cannot be stored (U+0000 or half of a surrogate pair)`, [{ field, message: 'must not contain U+0000 or an unpaired surrogate' }]));
}

/**
 * A route that documents no body takes none: fields sent to it are a 400 naming them, as for any
 * body (`{"queue": "x"}` to a replay is not silently ignored). No body, or `{}` (what many clients
 * send with a POST), is fine.
 */
function refuseBody(req: FastifyRequest, _reply: FastifyReply, done: (err?: Error) => void): void {
  const body: unknown = req.body;
  if (body === undefined || body === null) return done();
  if (typeof body === 'object' && !Array.isArray(body) && !Buffer.isBuffer(body)) {
    const fields = Object.keys(body);
    if (fields.length === 0) return done();
    return done(invalid(`this route takes no body (${fields.join(', ')} given)`, fields.map((field) => ({ field, message: 'is not allowed' }))));
  }
  if (typeof body === 'string' && body.length === 0) return done();
  done(invalid('this route takes no body', [{ field: 'body', message: 'is not allowed' }]));
}

/**
 * A query string takes only the parameters its route declares: an unknown one is a 400 naming
 * it, never silently ignored (a misspelt filter would otherwise list everything) and never passed
 * on to a service whose filters it could overwrite. A schema that says otherwise keeps its word
 * (a provider's verification request may carry parameters we do not know).
 */
function closed<T extends TSchema>(schema: T): T {
  if (schema.type !== 'object' || 'additionalProperties' in schema) return schema;
  return { ...schema, additionalProperties: false };
}
