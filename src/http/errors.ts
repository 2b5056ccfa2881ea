// The one place where errors become HTTP: application/problem+json {type, title, status, detail,
// code, errors?}. Unknown errors are an opaque 500 (the detail is logged, never sent).
import type { FastifyError, FastifyReply, FastifyRequest } from 'fastify';
import { isDatabaseUnavailable } from '../db/unavailable.ts';
import { AppError, ErrorCodes, type ErrorCode } from '../errors.ts';
import { NOT_BLANK, UUID_PATTERN } from './schemas/common.ts';

export type Problem = {
  type: string;
  title: string;
  status: number;
  detail?: string;
  code: ErrorCode;
  errors?: ReadonlyArray<{ field?: string; message: string }>;
  request_id?: string;
};

export function problem(code: ErrorCode, detail?: string, errors?: Problem['errors']): Problem {
  const { status, title } = ErrorCodes[code];
  return { type: `https://docs.ventros.dev/errors/${code}`, title, status, code, ...(detail ? { detail } : {}), ...(errors ? { errors } : {}) };
}

export function sendProblem(reply: FastifyReply, p: Problem): FastifyReply {
  return reply.code(p.status).type('application/problem+json').send({ ...p, request_id: reply.request.id });
}

/** Patterns the shared schemas use, said in words rather than as a regular expression. */
const PATTERN_WORDS: Record<string, string> = { [UUID_PATTERN]: 'must be a UUID', [NOT_BLANK]: 'must not be blank' };

function fromFastifyError(err: FastifyError, req: FastifyRequest): Problem | undefined {
  if (err.validation) {
    const errors = err.validation.map((v) => {
      const params = v.params as { missingProperty?: string; additionalProperty?: string; pattern?: string } | undefined;
      // An unknown key is named as its own field: "search_text is not allowed", not "must NOT have
      // additional properties" with no field.
      const unknown = v.keyword === 'additionalProperties' ? params?.additionalProperty : undefined;
      const path = v.instancePath + (unknown !== undefined ? `/${unknown}` : '');
      return {
        field: (path || params?.missingProperty || '').replace(/^\//, '').replace(/\//g, '.') || undefined,
        message: unknown !== undefined ? 'is not allowed' : (PATTERN_WORDS[params?.pattern ?? ''] ?? v.message ?? 'invalid'),
      };
    });
    return problem('validation', `${err.validationContext ?? 'request'} ${errors.map((e) => `${e.field ?? ''} ${e.message}`.trim()).join('; ')}`, errors);
  }
  switch (err.code) {
    case 'FST_ERR_CTP_BODY_TOO_LARGE':
      return problem('payload_too_large', `the request body is larger than the ${sizeText(req.routeOptions.bodyLimit)} this route takes`);
    case 'FST_ERR_CTP_INVALID_MEDIA_TYPE':
      return problem('validation', 'unsupported Content-Type; send application/json');
    case 'FST_ERR_CTP_INVALID_JSON_BODY':
      return problem('bad_json', err.message);
  }
  if (err instanceof SyntaxError || err.statusCode === 400) return problem('bad_json', err.message);
  if (err.statusCode === 413) return problem('payload_too_large');
  if (err.statusCode === 429) return problem('rate_limited');
  return undefined;
}

export function errorHandler(err: FastifyError, req: FastifyRequest, reply: FastifyReply) {
  if (err instanceof AppError) {
    if (err.headers) reply.headers(err.headers);
    return sendProblem(reply, problem(err.code, err.detail, err.errors));
  }
  const p = fromFastifyError(err, req);
  if (p) return sendProblem(reply, p);
  if (isCollision(err)) {
    // Two transactions took the same rows in opposite orders (PostgreSQL broke the deadlock by
    // aborting this one), or a serializable read lost: nothing of the request was written, and the
    // same request again will go through. Not a 500: nothing is wrong, the moment was.
    req.log.warn({ err }, 'request collided with a concurrent change; answered 503 to retry');
    reply.header('retry-after', '1');
    return sendProblem(reply, problem('unavailable', 'the request collided with another change made at the same moment and was not applied; send it again'));
  }
  if (isDatabaseUnavailable(err)) {
    // The database is down, restarting, failed over, full of connections, or this process's pool
    // had no connection to give within its wait: the moment, not the request. A 503 with
    // Retry-After lets clients and load balancers try again; a 500 says the request is at fault.
    req.log.warn({ err }, 'database unavailable; answered 503');
    reply.header('retry-after', '5');
    return sendProblem(reply, problem('unavailable', 'the database cannot be reached at the moment; send the request again shortly (a change whose answer was lost this way may already have been made)'));
  }
  if (isDataException(err)) {
    // A value the schema let through and PostgreSQL refused (out of range, wrong form for its
    // column). The routes check what they know of; this is the backstop, logged so that a check
    // we lack, or a query of ours at fault, is seen.
    req.log.warn({ err }, 'request value refused by the database');
    return sendProblem(reply, problem('validation', `a value in the request cannot be used: ${err.message}`));
  }
  req.log.error({ err }, 'unhandled error');
  return sendProblem(reply, problem('internal', 'something went wrong on our side; the request id identifies it in our logs'));
}

/**
 * PostgreSQL's data exceptions that a request's value can cause: a value of the wrong form for its
 * type (22P02, 22007), out of range (22008, 22003), too long (22001), an unstorable character
 * (22021, 22P05). Not the rest of class 22 (a division by zero, say): those are our queries' own
 * faults, and stay 500s.
 */
const INPUT_DATA_EXCEPTIONS = new Set(['22P02', '22007', '22008', '22003', '22001', '22021', '22P05']);

/** The SQLSTATE of an error PostgreSQL (or PGlite) raised; undefined for any other error. */
function pgCode(err: unknown): string | undefined {
  if (!(err instanceof Error) || !('severity' in err)) return undefined;
  const code = (err as { code?: unknown }).code;
  return typeof code === 'string' ? code : undefined;
}

/** PostgreSQL's deadlock_detected (40P01) and serialization_failure (40001). */
const isCollision = (err: unknown): boolean => ['40P01', '40001'].includes(pgCode(err) ?? '');

function isDataException(err: unknown): err is Error {
  return INPUT_DATA_EXCEPTIONS.has(pgCode(err) ?? '');
}

const sizeText = (bytes: number): string => (bytes % (1024 * 1024) === 0 ? `${bytes / (1024 * 1024)} MiB` : `${bytes} bytes`);
