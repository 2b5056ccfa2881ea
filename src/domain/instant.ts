// A caller's date-time, as something both JavaScript and PostgreSQL can use.
import { invalid } from '../errors.ts';

/**
 * `value` as a Date, or a validation error naming `field`. The schema's `date-time` format takes
 * what one side or the other cannot: a leap second (23:59:60, an invalid Date in JavaScript) and
 * year 0 (which PostgreSQL has not).
 */
export function instant(value: Date | string, field: string): Date {
  const d = value instanceof Date ? value : new Date(value);
  const year = d.getUTCFullYear();
  if (Number.isNaN(d.getTime()) || year < 1 || year > 9999) {
    throw invalid(`${field} is not a date-time we can use`, [{ field, message: 'expected an ISO 8601 date-time between years 1 and 9999' }]);
  }
  return d;
}
