// What a subscription may contain, checked when it is saved so a mistake is a clear 400 now rather
// than days of silent failures: event filters against the catalogue, custom headers we can send,
// a URL we are willing to call.
import { EVENT_TYPES } from '../domain/events.ts';
import { validateEventFilters } from '../domain/event-filter.ts';
import { invalid } from '../errors.ts';

export const MAX_HEADERS = 20;
const HEADER_NAME_RE = /^[!#$%&'*+.^_`|~0-9A-Za-z-]{1,100}$/;
// Ours (a custom value would replace a signature or break the request) and hop-by-hop headers.
const RESERVED_HEADERS = new Set([
  'webhook-id', 'webhook-timestamp', 'webhook-signature', 'x-webhook-signature',
  'content-type', 'content-length', 'content-encoding', 'user-agent', 'host', 'connection',
  'keep-alive', 'transfer-encoding', 'te', 'trailer', 'upgrade', 'expect', 'proxy-connection',
]);

/** Throws a 400 naming every unknown filter and listing the valid event types. */
export function checkEvents(events: readonly string[]): string[] {
  if (events.length === 0) throw invalid('events must name at least one event type', [{ field: 'events', message: 'empty' }]);
  const unknown = validateEventFilters(events, EVENT_TYPES);
  if (unknown.length > 0) {
    const detail = `unknown event types: ${unknown.join(', ')}. Valid: ${EVENT_TYPES.join(', ')}, a prefix such as "contact.*", or "*"`;
    throw invalid(detail, [{ field: 'events', message: detail }]);
  }
  return [...new Set(events)];
}

/** Throws a 400 for headers we cannot or will not send; returns them as given. */
export function checkHeaders(headers: Readonly<Record<string, unknown>>): Record<string, string> {
  const problems: Array<{ field: string; message: string }> = [];
  const entries = Object.entries(headers);
  if (entries.length > MAX_HEADERS) problems.push({ field: 'headers', message: `at most ${MAX_HEADERS} custom headers` });
  const seen = new Set<string>();
  for (const [name, value] of entries) {
    const lower = name.toLowerCase();
    const field = `headers.${name}`;
    if (!HEADER_NAME_RE.test(name)) problems.push({ field, message: 'not a valid header name' });
    else if (RESERVED_HEADERS.has(lower)) problems.push({ field, message: 'set by Ventros; it cannot be a custom header' });
    else if (seen.has(lower)) problems.push({ field, message: 'given twice (header names are case-insensitive)' });
    if (typeof value !== 'string') problems.push({ field, message: 'must be a string' });
    else if (/[\r\n\0]/.test(value)) problems.push({ field, message: 'must not contain line breaks or NUL' });
    // What the HTTP client can put on the wire (it refuses the rest before connecting, so every
    // delivery would fail): tab, printable ASCII and Latin-1; other control characters, no € or emoji.
    else if (/[^\t\x20-\x7e\x80-\xff]/.test(value)) problems.push({ field, message: 'only tab, printable ASCII and Latin-1 characters can be sent in a header' });
    else if (value.length > 2000) problems.push({ field, message: 'at most 2000 characters' });
    seen.add(lower);
  }
  if (problems.length > 0) throw invalid(problems.map((p) => `${p.field}: ${p.message}`).join('; '), problems);
  return Object.fromEntries(entries) as Record<string, string>;
}
