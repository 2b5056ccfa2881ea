// Hostile-input runs over the provider fixtures: every field (leaf or branch) of every fixture in
// a folder replaced by each wrong-typed value, or removed. The parser under test must return
// events or throw its ParseError; anything else (a TypeError, an Invalid Date let through) would
// be a crash on a provider's bad day.
import { readdirSync, readFileSync } from 'node:fs';

/**
 * The values a field is replaced by; `undefined` removes it. The names of Object.prototype's
 * members find a function, not nothing, in a plain object used as a lookup table.
 */
export const WRONG_VALUES: readonly unknown[] = [null, -1, 1e20, '', 'x', 'constructor', 'toString', '__proto__', [], {}, true, undefined];

/**
 * Parses each mutated body with `parse`; throws, naming the fixture, the field and the value, on
 * anything that is not a result or an `isParseError` throw. Returns how many bodies it tried.
 */
export function mutateFixtures(dir: URL, parse: (body: unknown) => Iterable<object>, isParseError: (e: unknown) => boolean): number {
  let runs = 0;
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.json'))) {
    const text = readFileSync(new URL(file, dir), 'utf8');
    for (const path of fieldPaths(JSON.parse(text))) {
      for (const value of WRONG_VALUES) {
        const body = JSON.parse(text);
        setPath(body, path, value);
        runs++;
        try {
          for (const e of parse(body)) {
            const t = (e as { timestamp?: Date }).timestamp;
            if (t && Number.isNaN(t.getTime())) throw new Error('invalid date');
            if (holdsFunction(e)) throw new Error(`a function in the event: ${JSON.stringify(e)}`);
          }
        } catch (e) {
          if (!isParseError(e)) throw new Error(`${file} ${path.join('.')}=${JSON.stringify(value)}: ${String(e)}`);
        }
      }
    }
  }
  return runs;
}

/** The path of every field below the root, branches and leaves. */
function fieldPaths(o: unknown, prefix: Array<string | number> = []): Array<Array<string | number>> {
  if (typeof o !== 'object' || o === null) return [prefix];
  const entries = Array.isArray(o) ? o.map((v, i) => [i, v] as const) : Object.entries(o);
  return [prefix, ...entries.flatMap(([k, v]) => fieldPaths(v, [...prefix, k]))].filter((p) => p.length > 0);
}

function setPath(o: any, path: Array<string | number>, value: unknown): void {
  let cur = o;
  for (const k of path.slice(0, -1)) cur = cur[k];
  const last = path[path.length - 1];
  if (value === undefined) delete cur[last];
  else cur[last] = value;
}

/** A function anywhere in a parsed event: a lookup that found one of Object.prototype's members. */
function holdsFunction(v: unknown, depth = 0): boolean {
  if (typeof v === 'function') return true;
  if (typeof v !== 'object' || v === null || depth > 20 || v instanceof Date) return false;
  return Object.values(v).some((x) => holdsFunction(x, depth + 1));
}
