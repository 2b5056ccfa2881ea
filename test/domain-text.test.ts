import { describe, expect, it } from 'vitest';
import { parseStorableJson, storableText } from '../src/domain/text.ts';
import { isInputRefusal } from '../src/inbound/input-refusal.ts';

describe('text and JSON made storable', () => {
  it('replaces U+0000 and lone surrogates with U+FFFD, in values at any depth, and keeps whole pairs', () => {
    const text = '{"a":"x\\u0000y","b":["\\ud83d","\\ude00z","\\ud83d\\ude00"],"c":{"d":"\\uD83D!"},"n":1,"t":true,"z":null}';
    expect(parseStorableJson(text)).toEqual({ a: 'x\ufffdy', b: ['\ufffd', '\ufffdz', '😀'], c: { d: '\ufffd!' }, n: 1, t: true, z: null });
  });

  it('parses everything else exactly as JSON.parse does, errors included', () => {
    for (const text of ['{"a":"\\u00e9\\u0001"}', '[1,"\\ud7ff\\ue000"]', '"plain"', '{"k":"\\\\u0000"}']) expect(parseStorableJson(text)).toEqual(JSON.parse(text));
    expect(() => parseStorableJson('{"a":')).toThrow(SyntaxError);
    expect(() => parseStorableJson('{"a":"\\u0000"')).toThrow(SyntaxError);
  });

  it('storableText leaves well-formed text alone', () => {
    for (const s of ['', 'olá 😀', '\ud7ff\ue000\uffff']) expect(storableText(s)).toBe(s);
    expect(storableText('\udc00\ud800')).toBe('\ufffd\ufffd');
  });

  it('counts data exceptions and oversized index values as the input refused, nothing else', () => {
    expect(['22P05', '22008', '22021', '54000'].map((code) => isInputRefusal({ code }))).toEqual([true, true, true, true]);
    expect([{ code: '40001' }, { code: '57P01' }, { code: 22 }, new Error('x'), null, undefined].map(isInputRefusal)).toEqual([false, false, false, false, false, false]);
  });
});
