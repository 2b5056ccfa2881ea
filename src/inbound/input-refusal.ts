// A database error that the input alone causes, so retrying cannot help: a data exception
// (SQLSTATE class 22: a value out of range, a character the encoding cannot hold) or a value too
// large for an index (54000). String values are made storable before they get this far
// (domain/text.ts), but object keys are not, and a parser may let through a value the database
// still refuses: such a webhook is parked, not retried into a dead letter.
export function isInputRefusal(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' && (code.startsWith('22') || code === '54000');
}
