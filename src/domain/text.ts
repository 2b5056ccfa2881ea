// Text the database can store. PostgreSQL's text and jsonb hold neither U+0000 nor a lone UTF-16
// surrogate; text from outside (a provider's JSON, a webhook receiver's answer) may carry either.
const LONE_SURROGATE = /[\uD800-\uDBFF](?![\uDC00-\uDFFF])|(?<![\uD800-\uDBFF])[\uDC00-\uDFFF]/g;

/** The string with U+0000 and lone surrogates replaced by U+FFFD, the replacement character. */
export function storableText(s: string): string {
  return s.replaceAll('\u0000', '\uFFFD').replace(LONE_SURROGATE, '\uFFFD');
}
