// One JSON request to a provider's HTTP API (WAHA, the Graph API): no redirects followed, a
// deadline, the body read whole and parsed when it is JSON. Throws only when no answer came
// (refused, reset, timed out); any status is an answer for the caller to classify.
export type ProviderAnswer = { status: number; json: unknown; text: string; retryAfter: string | null };

export async function providerRequest(
  url: string,
  opts: { method: string; headers: Record<string, string>; body?: unknown; timeoutMs: number },
): Promise<ProviderAnswer> {
  const res = await fetch(url, {
    method: opts.method,
    headers: { accept: 'application/json', ...opts.headers, ...(opts.body === undefined ? {} : { 'content-type': 'application/json' }) },
    ...(opts.body === undefined ? {} : { body: JSON.stringify(opts.body) }),
    redirect: 'manual',
    signal: AbortSignal.timeout(opts.timeoutMs),
  });
  const text = await res.text();
  let json: unknown;
  try {
    json = text ? JSON.parse(text) : undefined;
  } catch {
    json = undefined;
  }
  return { status: res.status, json, text, retryAfter: res.headers.get('retry-after') };
}
