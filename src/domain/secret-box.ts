// Credentials at rest: AES-256-GCM with a key derived from SECRET_KEY. The stored text is
// `v1.<iv>.<tag>.<ciphertext>` (base64url), so the format can change later without guessing.
import { createCipheriv, createDecipheriv, createHash, randomBytes } from 'node:crypto';

// GCM's tag is 16 bytes. Node would also accept a tag cut down to as little as 4 bytes, and a
// 4-byte tag can be forged by trying its 2^32 values, so only the full length is accepted.
const TAG_BYTES = 16;

function keyOf(secretKey: string): Buffer {
  return createHash('sha256').update(`ventros:secret-box:${secretKey}`).digest();
}

export function sealJson(secretKey: string, value: unknown): string {
  const iv = randomBytes(12);
  const cipher = createCipheriv('aes-256-gcm', keyOf(secretKey), iv, { authTagLength: TAG_BYTES });
  const ct = Buffer.concat([cipher.update(JSON.stringify(value), 'utf8'), cipher.final()]);
  return ['v1', iv.toString('base64url'), cipher.getAuthTag().toString('base64url'), ct.toString('base64url')].join('.');
}

/** Tampered, cut short or sealed under another key: one error for all, so none can be told apart. */
function notAuthentic(): Error {
  return new Error('sealed value failed authentication');
}

export function openJson<T = unknown>(secretKey: string, sealed: string): T {
  const [v, iv, tag, ct] = sealed.split('.');
  if (v !== 'v1' || !iv || !tag || ct === undefined) throw new Error('sealed value has an unknown format');
  const tagBytes = Buffer.from(tag, 'base64url');
  if (tagBytes.length !== TAG_BYTES) throw notAuthentic();
  const decipher = createDecipheriv('aes-256-gcm', keyOf(secretKey), Buffer.from(iv, 'base64url'), { authTagLength: TAG_BYTES });
  decipher.setAuthTag(tagBytes);
  const body = decipher.update(Buffer.from(ct, 'base64url'));
  let last: Buffer;
  try {
    last = decipher.final();
  } catch {
    throw notAuthentic();
  }
  return JSON.parse(Buffer.concat([body, last]).toString('utf8')) as T;
}
