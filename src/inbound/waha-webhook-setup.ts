// Points a WAHA session's webhook at our ingress (POST /channels/{id}/configure-webhook).
// `message.any` alone covers incoming messages and those typed on the phone; subscribing
// `message` too would only send every incoming message twice (harmless, deduped, but wasteful).
import type { Dispatcher } from 'undici';
import { isBlockedAddress } from '../channels/provider-http.ts';
import { wahaBlockedText, wahaErrorText, wahaRequest, type WahaAnswer } from '../channels/waha.client.ts';
import { AppError } from '../errors.ts';

export const WAHA_WEBHOOK_EVENTS = [
  'message.any',
  'message.ack',
  'message.reaction',
  'message.revoked',
  'message.edited',
  'session.status',
] as const;

export type WahaWebhookSetup = {
  baseUrl: string;
  session: string;
  apiKey: string;
  hmacKey?: string;
  url: string;
  timeoutMs?: number;
  /** Where the call may connect (provider-dispatchers.ts); any address when absent. */
  dispatcher?: Dispatcher | undefined;
};

/** `PUT {base_url}/api/sessions/{session}` with our webhook; throws AppError('unprocessable') when WAHA refuses. */
export async function registerWahaWebhook(s: WahaWebhookSetup): Promise<void> {
  const webhook = {
    url: s.url,
    events: [...WAHA_WEBHOOK_EVENTS],
    ...(s.hmacKey ? { hmac: { key: s.hmacKey } } : {}),
    retries: { policy: 'constant', delaySeconds: 2, attempts: 15 },
  };
  let a: WahaAnswer;
  try {
    a = await wahaRequest({ ...s, timeoutMs: s.timeoutMs ?? 10_000 }, 'PUT', `/api/sessions/${encodeURIComponent(s.session)}`, { config: { webhooks: [webhook] } });
  } catch (err) {
    if (isBlockedAddress(err)) throw new AppError('unprocessable', wahaBlockedText(s));
    throw new AppError('unprocessable', `WAHA at ${s.baseUrl} could not be reached: ${(err as Error).message}`);
  }
  if (a.status < 200 || a.status >= 300) throw new AppError('unprocessable', `${wahaErrorText(a)} (webhook registration)`);
}
