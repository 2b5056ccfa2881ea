// Sealed credentials open only with their whole 16-byte GCM tag: a tag cut short is refused as a
// tampered value is, since a 4-byte tag can be forged by trying its 2^32 values.
import { describe, expect, it } from 'vitest';
import { openJson, sealJson } from '../src/domain/secret-box.ts';

const KEY = 'k'.repeat(64);
const SECRET = { api_key: 'waha-key', hmac_key: 'hmac' };

/** The sealed text with its tag replaced by the first `bytes` bytes of it. */
function withTagCut(sealed: string, bytes: number): string {
  const [v, iv, tag, ct] = sealed.split('.');
  return [v, iv, Buffer.from(tag, 'base64url').subarray(0, bytes).toString('base64url'), ct].join('.');
}

/** The sealed text with one bit of its ciphertext flipped. */
function tampered(sealed: string): string {
  const [v, iv, tag, ct] = sealed.split('.');
  const bytes = Buffer.from(ct, 'base64url');
  bytes[0] ^= 1;
  return [v, iv, tag, bytes.toString('base64url')].join('.');
}

function errorOf(fn: () => unknown): Error {
  try {
    fn();
  } catch (err) {
    return err as Error;
  }
  throw new Error('expected a throw');
}

describe('secret box', () => {
  it('opens an intact sealed value', () => {
    expect(openJson(KEY, sealJson(KEY, SECRET))).toEqual(SECRET);
  });

  it('refuses a tag cut to 4 or 12 bytes with the error a tampered value gets', () => {
    const sealed = sealJson(KEY, SECRET);
    const tamperedError = errorOf(() => openJson(KEY, tampered(sealed)));
    for (const bytes of [4, 12]) {
      expect(() => openJson(KEY, withTagCut(sealed, bytes)), `${bytes}-byte tag`).toThrow(tamperedError.message);
    }
  });

  it('refuses a value sealed under another key with the same error', () => {
    const sealed = sealJson('another key'.repeat(6), SECRET);
    expect(() => openJson(KEY, sealed)).toThrow(errorOf(() => openJson(KEY, tampered(sealJson(KEY, SECRET)))).message);
  });
});
