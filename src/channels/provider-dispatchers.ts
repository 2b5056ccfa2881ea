// Where calls to a channel's provider may connect. A channel's address is its owner's to set (a
// WAHA base_url, a Cloud channel's api_base_url), and what the provider answers can come back to
// them (an error detail on a message, a status): unguarded, a tenant could make us call, and read,
// addresses inside our network. Each provider's calls go through the address guard of the webhook
// sender (ssrf-guard.ts) unless the deployment allows private addresses for it: WAHA is usually
// self-hosted next to us (WAHA_ALLOW_PRIVATE_URLS, default true), the Graph API is public
// (CLOUD_API_ALLOW_PRIVATE_URLS, default false).
import type { Dispatcher } from 'undici';
import type { Config } from '../config.ts';
import { makeGuardedDispatcher } from '../webhooks/ssrf-guard.ts';
import type { ChannelType } from '../db/channels.sql.ts';

/** Per channel type, the guarded dispatcher. */
export type ProviderDispatchers = Readonly<Record<ChannelType, Dispatcher>>;

/** Connecting and each wait for the provider; the callers' own deadlines bound the whole call. */
const GUARD_TIMEOUT_MS = 30_000;

// One set per configuration: the routes and the sender of a process share the same agents (and
// their connection pools) instead of each building its own.
const built = new WeakMap<object, ProviderDispatchers>();

export function providerDispatchers(config: Pick<Config, 'wahaAllowPrivateUrls' | 'cloudApiAllowPrivateUrls'>): ProviderDispatchers {
  let d = built.get(config);
  if (!d) {
    // Allowing private addresses still refuses link-local ones (the cloud metadata service).
    const guard = (allowPrivate: boolean) => makeGuardedDispatcher({ allowPrivate, timeoutMs: GUARD_TIMEOUT_MS });
    d = Object.freeze({ waha: guard(config.wahaAllowPrivateUrls), whatsapp_cloud: guard(config.cloudApiAllowPrivateUrls) });
    built.set(config, d);
  }
  return d;
}
