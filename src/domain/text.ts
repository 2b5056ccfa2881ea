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
