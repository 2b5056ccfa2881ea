// Text the database can store. PostgreSQL's text and jsonb hold neither U+0000 nor a lone UTF-16
// surrogate (an emoji cut in half by a sender that truncated its text); text from outside — a
// provider's webhook, a provider's answer, a webhook receiver's answer — may carry either. Left
// in, either makes the write fail, and every retry with it. Each becomes U+FFFD, the replacement
// character, so the text is kept, marked where it was damaged.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;
// In JSON both can only come as `\u` escapes (raw, U+0000 is not allowed in a string and UTF-8
// cannot encode a surrogate). Texts without such an escape (nearly all) are parsed as they are.
const RISKY_ESCAPE = /\\u(?:0000|[dD][89a-fA-F])/;

/** The string with U+0000 and lone surrogates replaced by U+FFFD. */
export function storableText(s: string): string {
  return s.replaceAll('\u0000', '\uFFFD').replace(LONE_SURROGATE, '\uFFFD');
}

/** `JSON.parse`, with every string value made storable (throws on what is not JSON). */
export function parseStorableJson(text: string): unknown {
  if (!RISKY_ESCAPE.test(text)) return JSON.parse(text);
  return JSON.parse(text, (_key, value: unknown) => (typeof value === 'string' ? storableText(value) : value));
}

/** How deep a request's JSON may nest: far beyond any body of ours, far below what recursion in
 * JSON.stringify, the Idempotency-Key hash or a jsonb comparison could not take. */
export const MAX_JSON_DEPTH = 64;
const UNSTORABLE = /\u0000|[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/;

/** What a request must not hold, and where: text the database cannot store, or nesting too deep. */
export type Unusable = { path: string; problem: 'text' | 'depth' };

/**
 * Where, in a parsed request (body or query), a string or a key holds U+0000 or a lone surrogate,
 * or an object or array sits deeper than MAX_JSON_DEPTH: its path (`custom_fields.k`,
 * `statuses.0.name`), or undefined. An API caller is told, rather than having its text changed as
 * a provider's is above. Walked without recursion: a body is read before its schema, and may
 * nest as deep as a megabyte allows.
 */
export function findUnusable(value: unknown): Unusable | undefined {
  const stack: Array<[unknown, string, number]> = [[value, '', 0]];
  while (stack.length > 0) {
    const [item, path, depth] = stack.pop()!;
    if (typeof item === 'string') {
      if (UNSTORABLE.test(item)) return { path, problem: 'text' };
      continue;
    }
    if (typeof item !== 'object' || item === null || Buffer.isBuffer(item)) continue;
    if (depth >= MAX_JSON_DEPTH) return { path, problem: 'depth' };
    const entries = Object.entries(item);
    for (let i = entries.length - 1; i >= 0; i--) {
      const [key, child] = entries[i];
      const at = path ? `${path}.${key}` : key;
      if (UNSTORABLE.test(key)) return { path: at, problem: 'text' };
      stack.push([child, at, depth + 1]);
    }
  }
  return undefined;
}

/**
 * A pattern a text that says something matches somewhere: any character but spaces and invisible
 * ones (zero-width space and joiners, word joiner, soft hyphen, Mongolian vowel separator). The
 * API's NOT_BLANK is this one, so what we store from a provider is what the API would take.
 */
export const NOT_BLANK_PATTERN = '[^\\s\\u00AD\\u180E\\u200B-\\u200D\\u2060]';
const NOT_BLANK_RE = new RegExp(NOT_BLANK_PATTERN, 'u');

/** Whether a text is empty or only spaces and invisible characters: the API calls it blank. */
export function isBlank(s: string): boolean {
  return !NOT_BLANK_RE.test(s);
}

/** The longest name the API takes for a contact (and a channel, a pipeline…), in characters. */
export const MAX_NAME_LENGTH = 200;

/**
 * A name a provider gives (a push name) as a contact may carry it: none when blank, else at most
 * MAX_NAME_LENGTH characters. Characters are code points, as the API counts them: a cut never
 * splits an emoji's surrogate pair.
 */
export function providedName(s: string | undefined): string | undefined {
  if (s === undefined || isBlank(s)) return undefined;
  if (s.length <= MAX_NAME_LENGTH) return s;
  let end = 0;
  for (let n = 0; n < MAX_NAME_LENGTH && end < s.length; n++) end += s.codePointAt(end)! > 0xffff ? 2 : 1;
  const cut = s.slice(0, end);
  // What said something may lie past the cut (200 invisible characters, then a name).
  return isBlank(cut) ? undefined : cut;
}
