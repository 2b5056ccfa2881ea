// Keyset pagination shared by the read queries: a page ends at a row, the cursor names that row by
// its sort key (a time and an id, plus a rank where a list merges several kinds of rows), and the
// next page starts strictly after it. Unlike OFFSET, rows inserted meanwhile never shift a page.
// A cursor also names its list (and the list's order): every cursor has the same shape, and one
// given to another list — a conversation's oldest-first messages with a cursor of the newest-first
// inbox — would start that list at a point of the other's, silently skipping rows.
import { isUuid } from '../domain/ids.ts';
import { invalid } from '../errors.ts';

export type Keyset = {
  /** The sort time exactly as the database holds it (microseconds, UTC), see `exactTime`. */
  at: string;
  id: string;
  /** Tie-breaker between kinds of rows at the same instant (the contact timeline). */
  rank?: number;
};

/** Rows of one page and the cursor of the next page (null on the last page). */
export type Page<T> = { rows: T[]; nextCursor: string | null };

export const MAX_PAGE = 200;

/**
 * SQL text of a timestamptz with all six fractional digits, independent of the session's DateStyle
 * and TimeZone. A JS Date keeps milliseconds only; a cursor built from one would skip or repeat
 * rows whose times differ below the millisecond (provider and now() times both can).
 */
export function exactTime(column: string): string {
  return `to_char(${column} AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')`;
}

/**
 * What `exactTime` renders. A cursor's time goes back to the database as `$n::timestamptz`: text
 * that JavaScript's lenient Date.parse takes but PostgreSQL refuses ("1", "Jan 1") would fail
 * there, a server error for a bad cursor; so only this exact shape is accepted.
 */
const EXACT_TIME = /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$/;

/**
 * A real instant, as PostgreSQL reads it: Date.parse rolls 31 February over to March and takes
 * year 0, both of which PostgreSQL refuses, so the parsed date must print back as it was written.
 */
function isExactTime(at: string): boolean {
  if (!EXACT_TIME.test(at) || at.startsWith('0000')) return false;
  const ms = Date.parse(at);
  return !Number.isNaN(ms) && new Date(ms).toISOString().slice(0, 19) === at.slice(0, 19);
}

/** Ranks are small tie-breakers (timeline-read.sql.ts); anything else did not come from us. */
const MAX_RANK = 1000;

/** `list` names the list and its order (`messages:oldest`, `contacts`): a cursor is taken by that list only. */
export function encodeCursor(list: string, k: Keyset): string {
  const tuple = k.rank === undefined ? [list, k.at, k.id] : [list, k.at, k.id, k.rank];
  return Buffer.from(JSON.stringify(tuple)).toString('base64url');
}

export function decodeCursor(list: string, cursor: string): Keyset {
  try {
    const v: unknown = JSON.parse(Buffer.from(cursor, 'base64url').toString('utf8'));
    if (Array.isArray(v) && (v.length === 3 || v.length === 4) && v[0] === list) {
      const [, at, id, rank] = v;
      const rankOk = rank === undefined || (Number.isInteger(rank) && rank >= 0 && rank <= MAX_RANK);
      if (typeof at === 'string' && isExactTime(at) && isUuid(id) && rankOk) {
        return rank === undefined ? { at, id } : { at, id, rank };
      }
    }
  } catch {
    // fall through: any malformed cursor gets the same answer
  }
  throw invalid('cursor is not valid', [{ field: 'cursor', message: 'use next_cursor from a previous page of the same list' }]);
}

/** Clamps a requested page size to 1..MAX_PAGE (the schema already enforces it for HTTP callers). */
export function pageSize(limit: number | undefined, fallback = 50): number {
  return Math.max(1, Math.min(Math.trunc(limit ?? fallback), MAX_PAGE));
}

/**
 * Cuts the `limit + 1` rows a query fetched down to `limit`; the extra row only proves there is a
 * next page. `key` reads the keyset of a raw row (which must select its exact time).
 */
export function toPage<R, T>(raw: R[], limit: number, list: string, key: (r: R) => Keyset, map: (r: R) => T): Page<T> {
  const rows = raw.slice(0, limit);
  const last = rows[rows.length - 1];
  return { rows: rows.map(map), nextCursor: raw.length > limit && last !== undefined ? encodeCursor(list, key(last)) : null };
}

/** Collects SQL conditions and their positional parameters. */
export class Where {
  readonly params: unknown[] = [];
  readonly clauses: string[] = [];

  /** Adds a parameter and returns its placeholder ($n). */
  param(value: unknown): string {
    this.params.push(value);
    return `$${this.params.length}`;
  }

  add(clause: string): this {
    this.clauses.push(clause);
    return this;
  }

  sql(): string {
    return this.clauses.length === 0 ? 'TRUE' : this.clauses.join(' AND ');
  }
}

/**
 * Just the paging of a caller's query. A list's filters that the path fixes (its project, its
 * contact) are the service's to set; spreading a whole query object next to them would let a key
 * in it overwrite them.
 */
export function pageOf(query: { limit?: number | undefined; cursor?: string | undefined }): { limit?: number; cursor?: string } {
  return { ...(query.limit !== undefined && { limit: query.limit }), ...(query.cursor !== undefined && { cursor: query.cursor }) };
}
