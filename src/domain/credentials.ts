// Secrets people hold: passwords (scrypt), API keys and login tokens (random, stored as SHA-256).
// No I/O; the services decide when to call these.
import { createHash, randomBytes, scrypt, timingSafeEqual, type ScryptOptions } from 'node:crypto';

export const API_KEY_PREFIX = 'vtr_';
export const LOGIN_TOKEN_PREFIX = 'vtl_';
export const PASSWORD_MIN_LENGTH = 8;
export const PASSWORD_MAX_LENGTH = 256;

// scrypt with N=2^15, r=8, p=1 (32 MiB, tens of milliseconds): the cost is stored with each hash,
// so it can be raised later and old hashes still verify.
const SCRYPT = { N: 2 ** 15, r: 8, p: 1, keylen: 32 } as const;

function scryptAsync(password: string, salt: Buffer, keylen: number, opts: ScryptOptions): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    scrypt(password.normalize('NFKC'), salt, keylen, { ...opts, maxmem: 256 * opts.N! * opts.r! }, (err, key) =>
      err ? reject(err) : resolve(key),
    );
  });
}

export async function hashPassword(password: string): Promise<string> {
  const salt = randomBytes(16);
  const hash = await scryptAsync(password, salt, SCRYPT.keylen, SCRYPT);
  return ['scrypt', SCRYPT.N, SCRYPT.r, SCRYPT.p, salt.toString('base64url'), hash.toString('base64url')].join('$');
}

/** Constant-time check of a password against a stored hash; false for a malformed hash. */
export async function verifyPassword(password: string, stored: string): Promise<boolean> {
  const [alg, n, r, p, salt, hash] = stored.split('$');
  if (alg !== 'scrypt' || !salt || !hash) return false;
  const expected = Buffer.from(hash, 'base64url');
  const actual = await scryptAsync(password, Buffer.from(salt, 'base64url'), expected.length, { N: Number(n), r: Number(r), p: Number(p) });
  return actual.length === expected.length && timingSafeEqual(actual, expected);
}

/**
 * Whether a stored hash is weaker than the current parameters make them (a cost raised since, a
 * shorter key): the login that proves the password rehashes it. Never one that is stronger: during
 * a rolling upgrade that raises the cost, an older process must not lower what a newer one stored.
 */
export function needsRehash(stored: string): boolean {
  const [alg, n, r, p, , hash] = stored.split('$');
  if (alg !== 'scrypt') return true;
  return Number(n) < SCRYPT.N || Number(r) < SCRYPT.r || Number(p) < SCRYPT.p || Buffer.from(hash ?? '', 'base64url').length < SCRYPT.keylen;
}

let decoy: Promise<string> | undefined;

/**
 * A hash no password matches, for logins with an unknown email: verifying against it costs the
 * same scrypt work as a real account, so response time does not tell which emails exist.
 */
export function decoyPasswordHash(): Promise<string> {
  return (decoy ??= hashPassword(randomBytes(24).toString('base64url')));
}

/** A new bearer secret: the prefix, then 256 random bits in base64url. */
export function newSecret(prefix: typeof API_KEY_PREFIX | typeof LOGIN_TOKEN_PREFIX): string {
  return prefix + randomBytes(32).toString('base64url');
}

/** What we store for a key or token. Lookups are by this hash, so no stored value is a credential. */
export function secretHash(secret: string): string {
  return createHash('sha256').update(secret).digest('hex');
}

/** The part of a key shown in listings (`vtr_` and 8 characters): enough to tell keys apart. */
export function displayPrefix(secret: string): string {
  return secret.slice(0, API_KEY_PREFIX.length + 8);
}

export function normaliseEmail(email: string): string {
  return email.trim().toLowerCase();
}
