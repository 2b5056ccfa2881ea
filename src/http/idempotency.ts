// Idempotency-Key on POST routes that declare `config: { idempotent: true }` (Stripe's scheme):
// - first request with a key: claimed, run, and its response (status + body) stored for 24 h;
// - same key, same method, path and body: the stored response is replayed, with
//   `Idempotent-Replayed: true`, and nothing runs again;
// - same key, different request: 409 idempotency_conflict; still running: 409 conflict;
// - a 5xx releases the key, so the client may retry with it.
// Keys are scoped to the caller: its project and its credential (the API key, or the signed-in user
// whatever login token they use), so that one credential never replays a response made for
// another (some carry secrets shown once). Only a hash of the key is stored, and the stored body is
// encrypted with a key derived from the client's Idempotency-Key and SECRET_KEY: the table alone
// reveals no response (some carry secrets shown once), even to one who guesses the client's key
// (`create-admin-key`) — the hash would confirm the guess.
// A claim is its owner's: the request that took over a stale claim is the only one that may
// record or release it (the request it took over may still finish, late).
import { createCipheriv, createDecipheriv, createHash, hkdfSync, randomBytes } from 'node:crypto';
import type { FastifyRequest, onSendAsyncHookHandler, preHandlerAsyncHookHandler, RouteOptions } from 'fastify';
import type { Queryable } from '../db/database.ts';
import type { AppDeps } from './app.ts';
import { withTransaction } from '../db/transaction.ts';
import { claimIdempotencyKey, completeIdempotencyKey, releaseIdempotencyKey } from '../db/idempotency.sql.ts';
import { AppError, invalid } from '../errors.ts';

declare module 'fastify' {
  interface FastifyRequest {
    /** `answered`: the handler recorded its answer in its own transaction (answerWithin). */
    idempotency: { keyHash: string; key: string; claim: string; answered?: boolean } | null;
  }
}

/** A claim older than this whose request never finished (process died) may be taken over. */
const STALE_CLAIM_MS = 5 * 60_000;

const UUID_IN_PATH = /(?<=\/)[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}(?=\/|$)/gi;

const sha256 = (s: string) => createHash('sha256').update(s).digest('hex');

/** JSON with sorted keys: the same body in another key order or spacing is the same request. */
function canonical(v: unknown): string {
  if (Array.isArray(v)) return `[${v.map(canonical).join(',')}]`;
  if (v && typeof v === 'object') {
    return `{${Object.keys(v)
      .sort()
      .map((k) => `${JSON.stringify(k)}:${canonical((v as Record<string, unknown>)[k])}`)
      .join(',')}}`;
  }
  return JSON.stringify(v) ?? 'null';
}

/** v2 (this release): the server's secret and the client's key; v1 (before): the client's key alone. */
function bodyKey(secret: string | null, key: string, projectId: string): Buffer {
  return secret === null
    ? Buffer.from(hkdfSync('sha256', key, projectId, 'ventros:idempotency:v1', 32))
    : Buffer.from(hkdfSync('sha256', `${secret}\n${key}`, projectId, 'ventros:idempotency:v2', 32));
}

function seal(secret: string, key: string, projectId: string, plain: Buffer): Buffer {
  const iv = randomBytes(12);
  const c = createCipheriv('aes-256-gcm', bodyKey(secret, key, projectId), iv);
  const ct = Buffer.concat([c.update(plain), c.final()]);
  return Buffer.concat([iv, c.getAuthTag(), ct]);
}

function unsealWith(k: Buffer, sealed: Buffer): Buffer {
  const d = createDecipheriv('aes-256-gcm', k, sealed.subarray(0, 12));
  d.setAuthTag(sealed.subarray(12, 28));
  return Buffer.concat([d.update(sealed.subarray(28)), d.final()]);
}

function unseal(secret: string, key: string, projectId: string, sealed: Buffer): Buffer {
  try {
    return unsealWith(bodyKey(secret, key, projectId), sealed);
  } catch {
    // Stored by the release before (responses are kept 24 h): sealed with the client's key alone.
    return unsealWith(bodyKey(null, key, projectId), sealed);
  }
}

/** Adds the claim (preHandler) and the record (onSend) to one route that declared `idempotent`. */
export function attachIdempotency(opts: RouteOptions, deps: Pick<AppDeps, 'db' | 'secretKey' | 'config'>): void {
  const { db } = deps;
  const secret = () => sealingSecret(deps);

  const claim: preHandlerAsyncHookHandler = async (req, reply) => {
    const key = req.headers['idempotency-key'];
    if (key === undefined) return;
    if (typeof key !== 'string' || key.length < 1 || key.length > 255) {
      throw invalid('Idempotency-Key must be one header of 1 to 255 characters', [{ field: 'Idempotency-Key', message: 'invalid' }]);
    }
    const { projectId, apiKeyId, userId } = req.auth;
    const keyHash = sha256(`${projectId}\n${apiKeyId ? `key:${apiKeyId}` : `user:${userId ?? ''}`}\n${key}`);
    // A uuid in the path names the same row in any case: so is it the same request.
    const path = req.url.split('?')[0].replace(UUID_IN_PATH, (id) => id.toLowerCase());
    const requestHash = sha256(canonical([req.method, path, req.body ?? null]));
    const held = await withTransaction(
      db,
      (tx) => claimIdempotencyKey(tx, { projectId, keyHash, method: req.method, path, requestHash, staleMs: STALE_CLAIM_MS }),
      { projectId },
    );
    if ('claim' in held) {
      req.idempotency = { keyHash, key, claim: held.claim };
      return;
    }
    if (held.requestHash !== requestHash) {
      throw new AppError('idempotency_conflict', `this Idempotency-Key was used for another request (${held.method} ${held.path} with a different body)`);
    }
    if (held.status === null || held.body === null) {
      throw new AppError('conflict', 'the first request with this Idempotency-Key is still running; retry in a moment', undefined, { 'retry-after': '1' });
    }
    reply.header('idempotent-replayed', 'true');
    if (held.contentType) reply.header('content-type', held.contentType);
    if (held.location) reply.header('location', held.location);
    return reply.code(held.status).send(unseal(secret(), key, projectId, held.body));
  };

  const record: onSendAsyncHookHandler = async (req, reply, payload) => {
    const claim = req.idempotency;
    if (!claim) return payload;
    req.idempotency = null;
    // Recorded with the change it answers. A 5xx after that means its commit failed: the change may
    // have landed, so the claim is kept (taken over once stale), not released for an immediate rerun.
    if (claim.answered) return payload;
    const projectId = req.auth.projectId;
    try {
      if (reply.statusCode >= 500) {
        await withTransaction(db, (tx) => releaseIdempotencyKey(tx, projectId, claim.keyHash, claim.claim), { projectId });
      } else {
        const body = payload === null || payload === undefined ? Buffer.alloc(0) : Buffer.isBuffer(payload) ? payload : Buffer.from(String(payload));
        const contentType = reply.getHeader('content-type');
        const location = reply.getHeader('location');
        await withTransaction(
          db,
          (tx) =>
            completeIdempotencyKey(tx, projectId, claim.keyHash, claim.claim, {
              status: reply.statusCode,
              contentType: typeof contentType === 'string' ? contentType : null,
              body: seal(secret(), claim.key, projectId, body),
              location: typeof location === 'string' ? location : null,
            }),
          { projectId },
        );
      }
    } catch (err) {
      // The response itself is fine; the claim stays and is taken over once stale.
      req.log.error({ err }, 'could not record the Idempotency-Key outcome');
    }
    return payload;
  };

  opts.preHandler = [...[opts.preHandler ?? []].flat(), claim];
  opts.onSend = [...[opts.onSend ?? []].flat(), record];
}

/** The key idempotent responses are sealed with: SECRET_KEY. */
function sealingSecret(deps: Pick<AppDeps, 'secretKey' | 'config'>): string {
  const s = deps.secretKey ?? deps.config.secretKey;
  if (!s) throw new AppError('internal', 'no SECRET_KEY: idempotent responses cannot be sealed');
  return s;
}

/** A JSON answer a handler records for its Idempotency-Key before it commits (answerWithin). */
type KnownAnswer = { status: number; body: unknown; location?: string };

/**
 * For a handler whose answer is known inside its transaction: records it there, so the change and
 * the answer a retry replays commit together. Otherwise the answer is recorded after the response
 * (onSend), and a failure in between — the record's write refused, the process gone — left the key
 * claimed and the change made: a retry got 409 for minutes, then ran again (a second reply to the
 * customer). Returns undefined when the request carries no Idempotency-Key.
 */
export function answerWithin(req: FastifyRequest, deps: Pick<AppDeps, 'secretKey' | 'config'>): ((tx: Queryable, answer: KnownAnswer) => Promise<void>) | undefined {
  const claim = req.idempotency;
  if (!claim) return undefined;
  const secret = sealingSecret(deps);
  const projectId = req.auth.projectId;
  return async (tx, answer) => {
    const held = await completeIdempotencyKey(tx, projectId, claim.keyHash, claim.claim, {
      status: answer.status,
      contentType: 'application/json; charset=utf-8',
      body: seal(secret, claim.key, projectId, Buffer.from(JSON.stringify(answer.body))),
      location: answer.location ?? null,
    });
    // Ran so long that a retry took the key over (and made the change itself, or is making it):
    // this one's change must not commit beside it — a second reply to the customer.
    if (!held) {
      throw new AppError('conflict', 'a retry with this Idempotency-Key took it over while this request ran too long; this request was not applied (the retry\'s answer is the one that counts)');
    }
    claim.answered = true;
  };
}
