// The addresses a WAHA reply's media_url host may reach, as WAHA's resolver would find them: WAHA
// fetches the URL itself, from inside our network, where a cloud metadata service answers on a
// link-local address — by a literal, by a name in /etc/hosts (GCE lists metadata.google.internal
// there), or by a short name its search domains complete (`instance-data` on EC2). So a name is
// looked up as given, with each search domain of resolv.conf, and in the hosts file.
//
// DNS goes through c-ares (dns.Resolver), not getaddrinfo: getaddrinfo runs on the four threads
// password hashing and file I/O share, and names on a server that never answers would hold them.
// The whole lookup has a deadline; what it has not found by then it does not report.
import { Resolver } from 'node:dns/promises';
import { readFile } from 'node:fs/promises';
import { isIP } from 'node:net';
import type { ResolvedAddress, ResolveHost } from '../webhooks/ssrf-guard.ts';

export type MediaLookupOptions = {
  hostsPath?: string;
  resolvConfPath?: string;
  /** One DNS name's addresses (c-ares by default); errors count as none. `cancels` collects what stops it. */
  query?: (name: string, cancels: Array<() => void>) => Promise<readonly ResolvedAddress[]>;
  deadlineMs?: number;
};

const MAX_SEARCH_DOMAINS = 6;

/** The search domains of a resolv.conf text (`search` wins over `domain`, the last line of each). */
export function searchDomains(conf: string): string[] {
  let domains: string[] = [];
  for (const line of conf.split('\n')) {
    const [key, ...values] = line.replace(/[#;].*$/, '').trim().split(/\s+/);
    if (key === 'search') domains = values;
    else if (key === 'domain' && values[0]) domains = [values[0]];
  }
  return domains.filter(Boolean).slice(0, MAX_SEARCH_DOMAINS);
}

/** The addresses a hosts-file text gives each of `names` (lower case). */
export function hostsAddresses(text: string, names: ReadonlySet<string>): ResolvedAddress[] {
  const out: ResolvedAddress[] = [];
  for (const line of text.split('\n')) {
    const [address, ...aliases] = line.replace(/#.*$/, '').trim().split(/\s+/);
    const family = address ? isIP(address) : 0;
    if (family && aliases.some((a) => names.has(a.toLowerCase()))) out.push({ address, family });
  }
  return out;
}

function caresQuery(timeoutMs: number) {
  return async (name: string, cancels: Array<() => void>): Promise<readonly ResolvedAddress[]> => {
    const resolver = new Resolver({ timeout: timeoutMs, tries: 1 });
    cancels.push(() => resolver.cancel());
    const [v4, v6] = await Promise.all([resolver.resolve4(name).catch(() => []), resolver.resolve6(name).catch(() => [])]);
    return [...v4.map((address) => ({ address, family: 4 })), ...v6.map((address) => ({ address, family: 6 }))];
  };
}

/** How long the hosts file and resolv.conf are read once for every lookup (they seldom change). */
const FILES_TTL_MS = 30_000;

/** A file's text, read at most once per FILES_TTL_MS; empty when it cannot be read. */
function cachedFile(path: string): () => Promise<string> {
  let text: Promise<string> | undefined;
  let readAt = 0;
  return () => {
    if (!text || Date.now() - readAt > FILES_TTL_MS) {
      readAt = Date.now();
      text = readFile(path, 'utf8').catch(() => '');
    }
    return text;
  };
}

export function makeMediaLookup(o: MediaLookupOptions = {}): ResolveHost {
  const deadlineMs = o.deadlineMs ?? 3000;
  const query = o.query ?? caresQuery(Math.min(2000, deadlineMs));
  const hostsFile = cachedFile(o.hostsPath ?? '/etc/hosts');
  const resolvConf = cachedFile(o.resolvConfPath ?? '/etc/resolv.conf');
  return async (host) => {
    const name = host.toLowerCase().replace(/\.$/, '');
    const rooted = host.endsWith('.');
    const [hosts, conf] = await Promise.all([hostsFile(), rooted ? '' : resolvConf()]);
    const names = [name, ...searchDomains(conf).map((d) => `${name}.${d.toLowerCase().replace(/\.$/, '')}`)];
    const found = hostsAddresses(hosts, new Set(names));
    const cancels: Array<() => void> = [];
    let timer: NodeJS.Timeout | undefined;
    const dns = await Promise.race([
      Promise.all(names.map((n) => query(n, cancels).catch(() => []))).then((all) => all.flat()),
      new Promise<ResolvedAddress[]>((resolve) => (timer = setTimeout(() => resolve([]), deadlineMs))),
    ]).finally(() => {
      clearTimeout(timer);
      for (const cancel of cancels) cancel(); // lookups still out end here, not at their own timeouts
    });
    return [...found, ...dns];
  };
}
