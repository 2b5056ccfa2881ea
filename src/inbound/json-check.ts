// Is this body JSON? The ingress must answer 400 to a body that is not, but it never needs the
// parsed value: the processor parses the body again anyway. So instead of JSON.parse (which
// decodes the bytes to a string and builds every object, string and number, only for them to be
// thrown away) this walks the bytes once and builds nothing. It accepts exactly what JSON.parse
// accepts for bytes that are valid UTF-8 (RFC 8259; a test compares the two on generated and
// mutated documents). UTF-8 itself is checked before, by `isUtf8`.

/** Where the bytes stop being JSON, or which kind of JSON value they are. */
export type JsonVerdict = { ok: true; top: 'object' | 'array' | 'scalar' } | { ok: false; at: number; reason: string };

const enum B {
  Tab = 0x09,
  Lf = 0x0a,
  Cr = 0x0d,
  Space = 0x20,
  Quote = 0x22,
  Plus = 0x2b,
  Comma = 0x2c,
  Minus = 0x2d,
  Dot = 0x2e,
  Slash = 0x2f,
  Zero = 0x30,
  One = 0x31,
  Nine = 0x39,
  Colon = 0x3a,
  E = 0x45,
  OpenSquare = 0x5b,
  Backslash = 0x5c,
  CloseSquare = 0x5d,
  LowerB = 0x62,
  LowerE = 0x65,
  LowerF = 0x66,
  LowerN = 0x6e,
  LowerR = 0x72,
  LowerT = 0x74,
  LowerU = 0x75,
  OpenCurly = 0x7b,
  CloseCurly = 0x7d,
}

/** What the walker expects next. */
const enum Want {
  /** Any value. */
  Value,
  /** A value or `]` (just after `[`). */
  ValueOrClose,
  /** A key or `}` (just after `{`). */
  KeyOrClose,
  /** A key (after a `,` in an object). */
  Key,
  /** The `:` after a key. */
  Colon,
  /** `,` or the closing bracket of the container, after a value inside one. */
  CommaOrClose,
  /** Nothing but whitespace: the top-level value is complete. */
  End,
}

const OBJECT = 1;
const ARRAY = 2;

const TRUE = [B.LowerT, B.LowerR, B.LowerU, B.LowerE];
const FALSE = [B.LowerF, 0x61, 0x6c, 0x73, B.LowerE];
const NULL = [B.LowerN, B.LowerU, 0x6c, 0x6c];

const isWs = (c: number) => c === B.Space || c === B.Lf || c === B.Cr || c === B.Tab;
const isDigit = (c: number) => c >= B.Zero && c <= B.Nine;
const isHex = (c: number) => isDigit(c) || (c >= 0x41 && c <= 0x46) || (c >= 0x61 && c <= B.LowerF);

/** 1 for the bytes a string may hold as they are: not a quote, backslash or control character. */
const PLAIN = new Uint8Array(256).map((_, c) => (c >= B.Space && c !== B.Quote && c !== B.Backslash ? 1 : 0));

/** The end of the string that opens at `i` (one past its closing quote), or ~offset of the fault. */
function stringEnd(b: Uint8Array, i: number): number {
  const n = b.length;
  for (let j = i + 1; j < n; j++) {
    while (j < n && PLAIN[b[j]] === 1) j++;
    if (j >= n) break;
    const c = b[j];
    if (c === B.Quote) return j + 1;
    if (c === B.Backslash) {
      const e = b[++j];
      if (e === B.LowerU) {
        for (let k = 1; k <= 4; k++) if (j + k >= n || !isHex(b[j + k])) return ~(j + k);
        j += 4;
      } else if (!(e === B.Quote || e === B.Backslash || e === B.Slash || e === B.LowerB || e === B.LowerF || e === B.LowerN || e === B.LowerR || e === B.LowerT)) {
        return ~j;
      }
    } else if (c < B.Space) {
      return ~j; // control characters must be escaped
    }
  }
  return ~n;
}

/** The end of the number that starts at `i`, or ~offset of the fault. */
function numberEnd(b: Uint8Array, i: number): number {
  const n = b.length;
  let j = i;
  if (b[j] === B.Minus) j++;
  if (j >= n) return ~j;
  if (b[j] === B.Zero) j++;
  else if (b[j] >= B.One && b[j] <= B.Nine) while (j < n && isDigit(b[j])) j++;
  else return ~j;
  if (j < n && b[j] === B.Dot) {
    j++;
    if (j >= n || !isDigit(b[j])) return ~j;
    while (j < n && isDigit(b[j])) j++;
  }
  if (j < n && (b[j] === B.LowerE || b[j] === B.E)) {
    j++;
    if (j < n && (b[j] === B.Plus || b[j] === B.Minus)) j++;
    if (j >= n || !isDigit(b[j])) return ~j;
    while (j < n && isDigit(b[j])) j++;
  }
  return j;
}

function literalEnd(b: Uint8Array, i: number, word: readonly number[]): number {
  for (let k = 0; k < word.length; k++) if (i + k >= b.length || b[i + k] !== word[k]) return ~(i + k);
  return i + word.length;
}

/** Walks `b` once. Builds nothing but a stack of open containers. */
export function checkJson(b: Uint8Array): JsonVerdict {
  const n = b.length;
  const stack: number[] = [];
  let want = Want.Value;
  let i = 0;

  while (i < n) {
    const c = b[i];
    if (isWs(c)) {
      i++;
      continue;
    }
    switch (want) {
      case Want.End:
        return fail(b, i);
      case Want.Colon:
        if (c !== B.Colon) return fail(b, i);
        i++;
        want = Want.Value;
        continue;
      case Want.CommaOrClose:
        if (c === B.Comma) {
          i++;
          want = stack[stack.length - 1] === OBJECT ? Want.Key : Want.Value;
          continue;
        }
        if (c !== (stack[stack.length - 1] === OBJECT ? B.CloseCurly : B.CloseSquare)) return fail(b, i);
        i++;
        stack.pop();
        want = stack.length === 0 ? Want.End : Want.CommaOrClose;
        continue;
      case Want.KeyOrClose:
      case Want.Key: {
        if (c === B.CloseCurly && want === Want.KeyOrClose) {
          i++;
          stack.pop();
          want = stack.length === 0 ? Want.End : Want.CommaOrClose;
          continue;
        }
        if (c !== B.Quote) return fail(b, i);
        const end = stringEnd(b, i);
        if (end < 0) return fail(b, ~end);
        i = end;
        want = Want.Colon;
        continue;
      }
      case Want.Value:
      case Want.ValueOrClose: {
        if (c === B.CloseSquare && want === Want.ValueOrClose) {
          i++;
          stack.pop();
          want = stack.length === 0 ? Want.End : Want.CommaOrClose;
          continue;
        }
        if (c === B.OpenCurly || c === B.OpenSquare) {
          stack.push(c === B.OpenCurly ? OBJECT : ARRAY);
          i++;
          want = c === B.OpenCurly ? Want.KeyOrClose : Want.ValueOrClose;
          continue;
        }
        const end =
          c === B.Quote ? stringEnd(b, i)
          : c === B.Minus || isDigit(c) ? numberEnd(b, i)
          : c === B.LowerT ? literalEnd(b, i, TRUE)
          : c === B.LowerF ? literalEnd(b, i, FALSE)
          : c === B.LowerN ? literalEnd(b, i, NULL)
          : ~i;
        if (end < 0) return fail(b, ~end);
        i = end;
        want = stack.length === 0 ? Want.End : Want.CommaOrClose;
        continue;
      }
    }
  }
  return want === Want.End ? { ok: true, top: topKind(b) } : fail(b, n);
}

/** What a valid document holds at the top: its first byte that is not whitespace says. */
function topKind(b: Uint8Array): 'object' | 'array' | 'scalar' {
  let i = 0;
  while (isWs(b[i])) i++;
  return b[i] === B.OpenCurly ? 'object' : b[i] === B.OpenSquare ? 'array' : 'scalar';
}

function fail(b: Uint8Array, at: number): JsonVerdict {
  return { ok: false, at, reason: at >= b.length ? 'it ends before the JSON does' : `unexpected ${describe(b[at])} at byte ${at}` };
}

function describe(c: number): string {
  if (c >= 0x21 && c <= 0x7e) return `'${String.fromCharCode(c)}'`;
  return `byte 0x${c.toString(16).padStart(2, '0')}`;
}
