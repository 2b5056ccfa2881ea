// Points a WAHA session's webhook at our ingress (POST /channels/{id}/configure-webhook).
// `message.any` alone covers incoming messages and those typed on the phone; subscribing
// `message` too would only send every incoming message twice (harmless, deduped, but wasteful).
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
};

/** `PUT {base_url}/api/sessions/{session}` with our webhook; throws AppError('unprocessable') when WAHA refuses. */
export async function registerWahaWebhook(s: WahaWebhookSetup): Promise<void> {
  const webhook = {
    url: s.url,
    events: [...WAHA_WEBHOOK_EVENTS],
    ...(s.hmacKey ? { hmac: { key: s.hmacKey } } : {}),
    retries: { policy: 'constant', delaySeconds: 2, attempts: 15 },
  };
  let res: Response;
  try {
    res = await fetch(`${s.baseUrl}/api/sessions/${encodeURIComponent(s.session)}`, {
      method: 'PUT',
      headers: { 'content-type': 'application/json', 'x-api-key': s.apiKey },
      body: JSON.stringify({ config: { webhooks: [webhook] } }),
      redirect: 'manual',
      signal: AbortSignal.timeout(s.timeoutMs ?? 10_000),
    });
  } catch (err) {
    throw new AppError('unprocessable', `WAHA at ${s.baseUrl} could not be reached: ${(err as Error).message}`);
  }
  if (!res.ok) {
    const text = (await res.text().catch(() => '')).slice(0, 300);
    throw new AppError('unprocessable', `WAHA answered ${res.status} to the webhook registration${text ? `: ${text}` : ''}`);
  }
  await res.body?.cancel().catch(() => {});
}
