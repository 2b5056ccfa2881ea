// Schemas every route shares: ids, timestamps, problem+json errors, list queries and the list
// envelope. TypeBox values are plain JSON Schema, so one declaration validates the request,
// serializes the response and documents both in /openapi.json.
//
// The document is OpenAPI 3.0, which has no `type: "null"`: write nullable fields with
// `Nullable(...)` below, not `Type.Union([..., Type.Null()])`.
import { Type, type Static, type TSchema } from '@sinclair/typebox';
import { ErrorCodes, type ErrorCode } from '../../errors.ts';
import { MAX_PAGE } from '../../db/keyset.ts';
import { NOT_BLANK_PATTERN } from '../../domain/text.ts';

/**
 * The hyphenated form only: Ajv's `uuid` format also takes `urn:uuid:…`, which PostgreSQL's uuid
 * type refuses (a server error instead of a 400). errors.ts words a mismatch as "must be a UUID".
 */
export const UUID_PATTERN = '^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$';
export const Uuid = Type.String({ format: 'uuid', pattern: UUID_PATTERN });
export const Timestamp = Type.String({ format: 'date-time' });
/**
 * Text that must say something: not empty, not only spaces or invisible characters (zero-width
 * space and joiners, word joiner, soft hyphen; errors.ts: "must not be blank"). One definition with
 * the inbound parsers' (a push name the API would refuse is not stored).
 */
export const NOT_BLANK = NOT_BLANK_PATTERN;


/** A value or null (OpenAPI 3.0 `nullable`, which Ajv and fast-json-stringify both understand). */
export function Nullable<T extends TSchema>(schema: T) {
  return Type.Unsafe<Static<T> | null>({ ...schema, nullable: true });
}

/** A JSON object with any keys (settings, custom fields, headers). */
export function FreeObject(description?: string) {
  return Type.Unsafe<Record<string, unknown>>({ type: 'object', additionalProperties: true, ...(description ? { description } : {}) });
}

/** `/things/{id}` */
export const IdParams = Type.Object({ id: Uuid });

export const Problem = Type.Object(
  {
    type: Type.String({ description: 'A URI naming the problem type' }),
    title: Type.String(),
    status: Type.Integer(),
    detail: Type.Optional(Type.String()),
    code: Type.Unsafe<ErrorCode>({ type: 'string', enum: Object.keys(ErrorCodes), description: 'Stable machine-readable code' }),
    errors: Type.Optional(Type.Array(Type.Object({ field: Type.Optional(Type.String()), message: Type.String() }))),
    request_id: Type.Optional(Type.String()),
  },
  { title: 'Problem', description: 'RFC 9457 problem details' },
);

/** A problem+json response for one status, with the description shown in the docs. */
export function problemResponse(description: string) {
  return { description, content: { 'application/problem+json': { schema: Problem } } };
}

/** `limit` and `cursor`, plus a route's own filters. */
export function ListQuery<P extends Record<string, TSchema> = Record<never, TSchema>>(filters?: P) {
  return Type.Object({
    limit: Type.Optional(Type.Integer({ minimum: 1, maximum: MAX_PAGE, default: 50, description: `Page size (1–${MAX_PAGE})` })),
    cursor: Type.Optional(Type.String({ maxLength: 1024, description: 'next_cursor from the previous page' })),
    ...((filters ?? {}) as P),
  });
}

/** The list envelope: `{data: [...], next_cursor}` (null on the last page). */
export function Page<T extends TSchema>(item: T) {
  return Type.Object({
    data: Type.Array(item),
    next_cursor: Nullable(Type.String({ description: 'Pass as `cursor` to get the next page; null on the last page' })),
  });
}

/** The response of a 204. */
export const NoContent = Type.Null({ description: 'No content' });

export const iso = (d: Date): string => d.toISOString();
export const isoOrNull = (d: Date | null | undefined): string | null => (d ? d.toISOString() : null);

/** A page from the query layer (`rows`, `nextCursor`) → the wire envelope. */
export function toPageBody<R, T>(page: { rows: R[]; nextCursor: string | null | undefined }, map: (r: R) => T) {
  return { data: page.rows.map(map), next_cursor: page.nextCursor ?? null };
}
