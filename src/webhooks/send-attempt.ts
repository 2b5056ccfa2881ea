// One attempt of a claimed delivery: sign with a fresh timestamp, POST, classify, and decide the
// delivery's next state. No database here; the dispatcher records what this returns.
import { readFileSync } from 'node:fs';
import type { Agent, Dispatcher as HttpDispatcher } from 'undici';
import type { ClaimedDelivery } from '../db/webhook-dispatch.sql.ts';
import { classifyAttempt, type AttemptOutcome } from './classify.ts';
import { postWebhook, type PostWebhookResult } from './post-webhook.ts';
import { nextAttemptDelay } from './retry-schedule.ts';
import { openSecrets, signPayload } from './signer.ts';

const VERSION: string = JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')).version;
export const USER_AGENT = `Ventros-CRM-Webhook/${VERSION}`;

export type AttemptDeps = {
  secretKey: string;
  scheduleMs: readonly number[];
  defaultTimeoutMs: number;
  agent: HttpDispatcher;
  random?: () => number;
};

export type Next = { status: 'succeeded' } | { status: 'dead' } | { status: 'retrying'; at: Date };

export type AttemptReport = {
  startedAt: Date;
  result: PostWebhookResult;
  outcome: AttemptOutcome;
  next: Next;
};

// Opening a sealed secret costs a key derivation and a decryption; the same few subscriptions
// are sent to thousands of times a second. Bounded: cleared when it grows past the limit.
const openedSecrets = new Map<string, string[]>();

function openSecret(secretKey: string, sealed: string): string[] {
  let plain = openedSecrets.get(sealed);
  if (plain === undefined) {
    plain = openSecrets(secretKey, sealed);
    if (openedSecrets.size >= 10_000) openedSecrets.clear();
    openedSecrets.set(sealed, plain);
  }
  return plain;
}

/**
 * The request headers: the subscription's custom headers first, then ours, so a custom header
 * can never replace the content type, the user agent or a signature.
 */
export function requestHeaders(c: Pick<ClaimedDelivery, 'headers' | 'eventId' | 'body'>, secrets: readonly string[], nowMs: number): Record<string, string> {
  const signed = signPayload({ id: c.eventId, timestamp: Math.floor(nowMs / 1000), body: c.body, secrets });
  return { ...c.headers, 'content-type': 'application/json', 'user-agent': USER_AGENT, ...signed };
}

export async function sendAttempt(c: ClaimedDelivery, deps: AttemptDeps): Promise<AttemptReport> {
  const startedAt = new Date();
  const timeoutMs = c.timeoutSeconds ? c.timeoutSeconds * 1000 : deps.defaultTimeoutMs;
  let result: PostWebhookResult;
  try {
    const headers = requestHeaders(c, c.secrets.flatMap((s) => openSecret(deps.secretKey, s)), startedAt.getTime());
    result = await postWebhook({ url: c.url, body: c.body, headers, timeoutMs, dispatcher: deps.agent });
  } catch (err) {
    // Signing failed (a secret we cannot open): our fault, classified as internal and retried.
    result = { durationMs: 0, responseExcerpt: '', responseBytes: 0, truncated: false, error: err instanceof Error ? err : new Error(String(err)) };
  }
  const outcome = classifyAttempt({ statusCode: result.statusCode, error: result.error, retryAfter: result.retryAfter });
  return { startedAt, result, outcome, next: decideNext(c, outcome, deps) };
}

export function decideNext(c: Pick<ClaimedDelivery, 'attempts' | 'attemptsBeforeRecover' | 'maxAttempts'>, outcome: AttemptOutcome, deps: Pick<AttemptDeps, 'scheduleMs' | 'random'>): Next {
  if (outcome.class === 'success') return { status: 'succeeded' };
  if (outcome.disable || !outcome.retry) return { status: 'dead' };
  // A manual retry of a finished delivery is one more attempt, this one (see requeueDelivery).
  if (c.attempts <= c.attemptsBeforeRecover) return { status: 'dead' };
  const delay = nextAttemptDelay({
    // A recovered delivery has its whole schedule again, counted from its recovery.
    attempt: c.attempts - c.attemptsBeforeRecover,
    scheduleMs: deps.scheduleMs,
    ...(c.maxAttempts !== null && { maxAttempts: c.maxAttempts }),
    ...(outcome.retryAfterMs !== undefined && { retryAfterMs: outcome.retryAfterMs }),
    ...(deps.random && { random: deps.random }),
  });
  return delay === undefined ? { status: 'dead' } : { status: 'retrying', at: new Date(Date.now() + delay) };
}

/**
 * Closes the HTTP agent when the dispatcher stops. Requests still out (`inFlight`: the dispatcher
 * has waited for them as long as it gives them) are cut off — their connections destroyed, so
 * they end at once with undici's "destroyed" error — rather than waited for up to their timeout;
 * `onCutOff` runs just before, so the dispatcher can tell the errors it causes from the endpoints'
 * own. Their rows are `sending` and come back after the lease. Without requests out, the idle
 * connections are closed, for at most `graceMs`.
 *
 * Never close() and then destroy(): undici's Agent.close() lets go of its connection pools at
 * once, so a destroy() after it reaches none of them and the requests go on to their timeout.
 */
export async function closeAgent(agent: Agent, opts: { inFlight: boolean; onCutOff?: () => void; graceMs?: number }): Promise<void> {
  if (opts.inFlight) {
    opts.onCutOff?.();
    await agent.destroy().catch(() => {});
    return;
  }
  let timer: NodeJS.Timeout | undefined;
  const grace = new Promise<void>((resolve) => (timer = setTimeout(resolve, opts.graceMs ?? 1_000)));
  await Promise.race([agent.close(), grace]).catch(() => {});
  clearTimeout(timer);
}
