// A provider's JSON body as values the database can store. JSON may carry, as `\u` escapes, two
// things PostgreSQL's text and jsonb cannot hold: U+0000 and a lone UTF-16 surrogate (an emoji cut
// in half by a sender that truncated its text). Left in, either makes the message's transaction
// fail on every retry. Each becomes U+FFFD, the replacement character, so the message is stored
// with its text marked where it was damaged. Bodies without such an escape (nearly all) are parsed
// as they are: the check is one scan of the text, the per-value pass only runs when it finds one.
import { storableText } from '../domain/text.ts';

const RISKY_ESCAPE = /\\u(?:0000|[dD][89a-fA-F])/;

/** `JSON.parse`, with every string value made storable (throws on what is not JSON). */
export function parseProviderJson(text: string): unknown {
  if (!RISKY_ESCAPE.test(text)) return JSON.parse(text);
  return JSON.parse(text, (_key, value: unknown) => (typeof value === 'string' ? storableText(value) : value));
}

/**
 * A database error that the input alone causes, so retrying cannot help: a data exception
 * (SQLSTATE class 22: a value out of range, a character the encoding cannot hold) or a value too
 * large for an index (54000). Object keys are not made storable above, and a parser may let
 * through a value the database still refuses; such a webhook is parked, not retried.
 */
export function isInputRefusal(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('22') || code === '54000');
}
