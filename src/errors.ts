// Typed application errors with stable codes. Services throw these; http/errors.ts maps them to
// application/problem+json in one place. Services never import HTTP types.

export const ErrorCodes = {
  validation: { status: 400, title: 'Invalid request' },
  bad_json: { status: 400, title: 'Body is not valid JSON' },
  unauthorized: { status: 401, title: 'Authentication required' },
  invalid_signature: { status: 401, title: 'Signature or token does not match' },
  forbidden: { status: 403, title: 'Not allowed for your role' },
  not_found: { status: 404, title: 'Not found' },
  conflict: { status: 409, title: 'Conflict' },
  email_taken: { status: 409, title: 'Email already registered' },
  already_ended: { status: 409, title: 'Already ended' },
  idempotency_conflict: { status: 409, title: 'Idempotency-Key reused with a different request' },
  payload_too_large: { status: 413, title: 'Payload too large' },
  unprocessable: { status: 422, title: 'Cannot process this request' },
  rate_limited: { status: 429, title: 'Too many requests' },
  internal: { status: 500, title: 'Internal error' },
  unavailable: { status: 503, title: 'Service unavailable' },
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class AppError extends Error {
  constructor(
    readonly code: ErrorCode,
    readonly detail?: string,
    readonly errors?: ReadonlyArray<{ field?: string; message: string }>,
    readonly headers?: Record<string, string>,
  ) {
    super(detail ?? ErrorCodes[code].title);
    this.name = 'AppError';
  }
  get status(): number {
    return ErrorCodes[this.code].status;
  }
}

export const notFound = (what: string) => new AppError('not_found', `${what} not found`);
export const invalid = (detail: string, errors?: AppError['errors']) => new AppError('validation', detail, errors);
/** A 429 with the seconds to wait in Retry-After. */
export const rateLimited = (detail: string, retryAfterSeconds: number) => new AppError('rate_limited', detail, undefined, { 'retry-after': String(retryAfterSeconds) });
