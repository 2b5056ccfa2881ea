// "The database is not there", as opposed to "this statement failed". The PostgreSQL adapter marks
// the errors of its connections that say so; a consumer then knows that a failure is no fault of
// the message it was handling (it must not spend the message's attempts on an outage, or a
// failover of a few minutes would dead-letter everything consumed meanwhile).
//
// Only the adapter marks, and only errors of its own calls: an ECONNREFUSED from an HTTP call a
// handler makes inside a transaction is that handler's failure, and counts.

const UNAVAILABLE = Symbol('database unavailable');

// SQLSTATE codes of an unreachable, restarting, full or read-only (failed-over) server: 08000,
// 08001, 08003, 08004, 08006 connection exceptions; 53100 disk full, 53300 too many connections;
// 57P01–57P03 shutting down or starting; 25006 read-only transaction (a standby after a failover).
// Not 08P01 (a protocol violation) nor 53200 (out of memory): a statement can cause those itself.
// A message whose own query crashes the server still looks like an outage from here; the broker
// bounds how long it lets a message go round for one.
const UNAVAILABLE_STATE = /^08(?:000|001|003|004|006)$|^53(?:100|300)$|^57P0[1-3]$|^25006$/;
const SOCKET_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);
// What pg says when a connection ends or cannot be had; these errors carry no code.
const UNAVAILABLE_TEXT = /Connection terminated|timeout exceeded when trying to connect|Client has encountered a connection error|Connection ended unexpectedly/i;

function looksUnavailable(err: unknown): boolean {
  if (!(err instanceof Error)) return false;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (UNAVAILABLE_STATE.test(code) || SOCKET_CODES.has(code))) return true;
  if (UNAVAILABLE_TEXT.test(err.message)) return true;
  return err instanceof AggregateError && err.errors.some(looksUnavailable);
}

/** Marks `err` if it says the server is unavailable; returns it (for `throw markUnavailable(e)`). */
export function markUnavailable(err: unknown): unknown {
  if (looksUnavailable(err) && typeof err === 'object' && err !== null && Object.isExtensible(err)) {
    Object.defineProperty(err, UNAVAILABLE, { value: true, enumerable: false });
  }
  return err;
}

/** Whether `err` (or an error it wraps, through `cause`) was marked by the database adapter. */
export function isDatabaseUnavailable(err: unknown): boolean {
  for (let e = err, depth = 0; typeof e === 'object' && e !== null && depth < 5; e = (e as { cause?: unknown }).cause, depth++) {
    if ((e as { [UNAVAILABLE]?: boolean })[UNAVAILABLE] === true) return true;
  }
  return false;
}
