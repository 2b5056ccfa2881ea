// The ingress's JSON walk must accept exactly what JSON.parse accepts: compared on hand-picked
// edge cases, on every provider fixture, and on thousands of generated and mutated documents.
import { isUtf8 } from 'node:buffer';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { checkJson } from '../../src/inbound/json-check.ts';

function parses(b: Buffer): { ok: boolean; top?: string } {
  try {
    const v: unknown = JSON.parse(b.toString('utf8'));
    return { ok: true, top: Array.isArray(v) ? 'array' : typeof v === 'object' && v !== null ? 'object' : 'scalar' };
  } catch {
    return { ok: false };
  }
}

function agrees(b: Buffer): void {
  if (!isUtf8(b)) return; // the ingress refuses these before walking them
  const expected = parses(b);
  const got = checkJson(b);
  const context = JSON.stringify(b.toString('utf8'));
  expect(got.ok, context).toBe(expected.ok);
  if (got.ok) expect(got.top, context).toBe(expected.top);
}

/** A small deterministic generator (mulberry32), so a failure reproduces. */
function rng(seed: number) {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const STRING_PIECES = ['a', 'Ação', '😀', '\\"', '\\\\', '\\/', '\\n', '\\u00e9', '\\uD83D\\uDE00', '\\ud800', ' ', '{', ']', ':', ',', '5511999999999@c.us'];
const NUMBERS = ['0', '-0', '1', '-12', '3.25', '1e5', '1E+5', '2.5e-3', '1764460800123', '123456789012345678901234567890', '-0.0e0'];
const WHITESPACE = ['', ' ', '\n', '\t', '\r\n', '  '];

function generate(r: () => number, depth: number): string {
  const ws = () => WHITESPACE[Math.floor(r() * WHITESPACE.length)];
  const pick = r();
  if (depth > 4 || pick < 0.35) {
    const s = r();
    if (s < 0.4) return `"${Array.from({ length: Math.floor(r() * 4) }, () => STRING_PIECES[Math.floor(r() * STRING_PIECES.length)]).join('')}"`;
    if (s < 0.75) return NUMBERS[Math.floor(r() * NUMBERS.length)];
    return ['true', 'false', 'null'][Math.floor(r() * 3)];
  }
  const n = Math.floor(r() * 4);
  if (pick < 0.65) return `[${ws()}${Array.from({ length: n }, () => `${ws()}${generate(r, depth + 1)}${ws()}`).join(',')}]`;
  return `{${ws()}${Array.from({ length: n }, (_, i) => `${ws()}"k${i}"${ws()}:${ws()}${generate(r, depth + 1)}${ws()}`).join(',')}}`;
}

const MUTATION_BYTES = Buffer.from('{}[]",:\\ \n0123456789-+.eEtfnul\x00\x1f\x7fé');

function mutate(r: () => number, b: Buffer): Buffer {
  const at = Math.floor(r() * (b.length + 1));
  const byte = MUTATION_BYTES[Math.floor(r() * MUTATION_BYTES.length)];
  switch (Math.floor(r() * 4)) {
    case 0: // drop a byte
      return Buffer.concat([b.subarray(0, at), b.subarray(at + 1)]);
    case 1: // insert one
      return Buffer.concat([b.subarray(0, at), Buffer.from([byte]), b.subarray(at)]);
    case 2: // replace one
      return at < b.length ? Buffer.concat([b.subarray(0, at), Buffer.from([byte]), b.subarray(at + 1)]) : b;
    default: // cut the end off
      return b.subarray(0, at);
  }
}

describe('checkJson', () => {
  it.each([
    ['{}', true],
    [' \n\t\r{ } \n', true],
    ['{"a":1}', true],
    ['[]', true],
    ['"x"', true],
    ['0', true],
    ['-0.5e+10', true],
    ['true', true],
    ['{"a":[1,{"b":null}],"c":"\\u00e9\\n"}', true],
    ['{"a":"\\ud800"}', true],
    ['', false],
    ['   ', false],
    ['{', false],
    ['}', false],
    ['{"a"}', false],
    ['{"a":}', false],
    ['{"a":1,}', false],
    ['[1,]', false],
    ['[,1]', false],
    ['{a:1}', false],
    ["{'a':1}", false],
    ['{"a":01}', false],
    ['{"a":1.}', false],
    ['{"a":.5}', false],
    ['{"a":+1}', false],
    ['{"a":-}', false],
    ['{"a":1e}', false],
    ['{"a":tru}', false],
    ['{"a":True}', false],
    ['{"a":NaN}', false],
    ['{"a":"\\x"}', false],
    ['{"a":"\\u12"}', false],
    ['{"a":"\\u12g4"}', false],
    ['{"a":"tab\there"}', false],
    ['{"a":"new\nline"}', false],
    ['{"a":"open}', false],
    ['{} {}', false],
    ['{}x', false],
    ['[}', false],
    ['{]', false],
    ['\ufeff{}', false],
    ['{"a":1}\u00a0', false],
  ])('%j → %s, as JSON.parse says', (text, ok) => {
    expect(parses(Buffer.from(text)).ok).toBe(ok);
    agrees(Buffer.from(text));
  });

  it('says where the bytes stop being JSON', () => {
    expect(checkJson(Buffer.from('{"a":1,}'))).toEqual({ ok: false, at: 7, reason: "unexpected '}' at byte 7" });
    expect(checkJson(Buffer.from('{"a":"b'))).toEqual({ ok: false, at: 7, reason: 'it ends before the JSON does' });
    expect(checkJson(Buffer.from('{"a":"\x01"}'))).toMatchObject({ ok: false, at: 6, reason: 'unexpected byte 0x01 at byte 6' });
  });

  it('accepts every provider fixture as an object', () => {
    for (const provider of ['waha', 'whatsapp-cloud']) {
      const dir = new URL(`../fixtures/${provider}/`, import.meta.url);
      const files = readdirSync(dir).filter((f) => f.endsWith('.json'));
      expect(files.length).toBeGreaterThan(0);
      for (const f of files) expect(checkJson(readFileSync(new URL(f, dir))), f).toEqual({ ok: true, top: 'object' });
    }
  });

  it('agrees with JSON.parse on 4,000 generated documents and 16,000 mutations of them', () => {
    const r = rng(20261130);
    let accepted = 0;
    let refused = 0;
    for (let i = 0; i < 4000; i++) {
      const doc = Buffer.from(generate(r, 0));
      agrees(doc);
      for (let m = 0; m < 4; m++) {
        let b = mutate(r, doc);
        if (r() < 0.3) b = mutate(r, b);
        agrees(b);
        if (!isUtf8(b)) continue;
        if (parses(b).ok) accepted++;
        else refused++;
      }
    }
    // The mutations must exercise both answers, or the comparison proves little.
    expect(accepted).toBeGreaterThan(1000);
    expect(refused).toBeGreaterThan(5000);
  });

  it('walks deep nesting without recursion', () => {
    const deep = Buffer.from(`${'['.repeat(100_000)}${']'.repeat(100_000)}`);
    expect(checkJson(deep)).toEqual({ ok: true, top: 'array' });
    expect(checkJson(deep.subarray(0, deep.length - 1)).ok).toBe(false);
  });
});
