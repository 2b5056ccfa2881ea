// Subscribers choose the URLs we POST to, so without a guard anyone with a manager key could make
// us call our own admin ports, the cloud metadata service or the office network. Two checks:
// `checkWebhookUrl` when a subscription is saved (a clear 400), and `makeGuardedDispatcher` at
// every connection — DNS can change between the two (rebinding), so the save-time check alone
// proves nothing.
import { BlockList, isIPv4, isIPv6, type LookupFunction } from 'node:net';
import { lookup } from 'node:dns/promises';
import { Agent, buildConnector } from 'undici';
import { AppError } from '../errors.ts';
import { parseUrl } from '../url.ts';

const v4 = new BlockList();
for (const [net, prefix] of [
  ['0.0.0.0', 8], // "this network"; 0.0.0.0 reaches localhost on Linux
  ['10.0.0.0', 8],
  ['100.64.0.0', 10], // CGNAT, often the provider's internal network
  ['127.0.0.0', 8],
  ['169.254.0.0', 16], // link-local, incl. 169.254.169.254 cloud metadata
  ['172.16.0.0', 12],
  ['192.0.0.0', 24], // IETF protocol assignments
  ['192.0.2.0', 24], // documentation
  ['192.168.0.0', 16],
  ['198.18.0.0', 15], // benchmarking
  ['198.51.100.0', 24], // documentation
  ['203.0.113.0', 24], // documentation
  ['224.0.0.0', 4], // multicast
  ['240.0.0.0', 4], // reserved, incl. 255.255.255.255 broadcast
] as const) {
  v4.addSubnet(net, prefix, 'ipv4');
}

const v6 = new BlockList();
for (const [net, prefix] of [
  ['::', 128], // unspecified
  ['::1', 128], // loopback
  ['64:ff9b:1::', 48], // local-use NAT64 (RFC 8215): translates into the local network
  ['100::', 64], // discard
  ['2001::', 32], // Teredo: tunnels to an obfuscated IPv4 we cannot check
  ['2001:db8::', 32], // documentation
  ['fc00::', 7], // unique local
  ['fe80::', 10], // link-local
  ['fec0::', 10], // deprecated site-local, still routed inside some networks
  ['ff00::', 8], // multicast
] as const) {
  v6.addSubnet(net, prefix, 'ipv6');
}

/**
 * True for loopback, private, link-local, CGNAT, multicast, reserved and documentation addresses,
 * including IPv6 forms that carry an IPv4 address (::ffff:a.b.c.d, ::a.b.c.d, 64:ff9b::/96 NAT64,
 * 2002::/16 6to4) when that IPv4 address is one of them. Anything that is not an IP address
 * counts as private: the guard fails closed.
 */
export function isPrivateAddress(ip: string): boolean {
  return inLists(ip, v4, v6);
}

const linkLocal4 = new BlockList();
linkLocal4.addSubnet('169.254.0.0', 16, 'ipv4'); // AWS, Azure, GCP, Oracle… metadata at 169.254.169.254
linkLocal4.addAddress('100.100.100.200', 'ipv4'); // Alibaba Cloud's metadata service
const linkLocal6 = new BlockList();
linkLocal6.addSubnet('fe80::', 10, 'ipv6');
linkLocal6.addAddress('fd00:ec2::254', 'ipv6'); // AWS's metadata service over IPv6

/**
 * True for link-local addresses (169.254.0.0/16, fe80::/10) and the cloud metadata services'
 * other addresses (100.100.100.200, fd00:ec2::254), in any of the forms isPrivateAddress reads:
 * where instances serve their metadata and credentials. Refused even where private addresses are
 * allowed: no provider or receiver lives there, and a tenant's URL must never reach them.
 */
export function isLinkLocalAddress(ip: string): boolean {
  return inLists(ip, linkLocal4, linkLocal6);
}

function inLists(ip: string, list4: BlockList, list6: BlockList): boolean {
  const address = ip.trim().replace(/^\[(.*)\]$/, '$1').replace(/%.*$/, ''); // brackets, zone id
  if (isIPv4(address)) return list4.check(address, 'ipv4');
  if (!isIPv6(address)) return true;
  if (list6.check(address, 'ipv6')) return true;
  const embedded = embeddedIPv4(ipv6Words(address));
  return embedded !== undefined && list4.check(embedded, 'ipv4');
}

function ipv6Words(address: string): number[] {
  let text = address.toLowerCase();
  let tail: [number, number] | undefined;
  const lastColon = text.lastIndexOf(':');
  if (text.slice(lastColon + 1).includes('.')) {
    const [a, b, c, d] = text.slice(lastColon + 1).split('.').map(Number);
    tail = [(a << 8) | b, (c << 8) | d];
    text = `${text.slice(0, lastColon + 1)}0:0`;
  }
  const [head, rest] = text.split('::');
  const headWords = head ? head.split(':') : [];
  const restWords = rest ? rest.split(':') : [];
  const gap = rest === undefined ? 0 : 8 - headWords.length - restWords.length;
  const words = [...headWords, ...Array<string>(gap).fill('0'), ...restWords].map((w) => parseInt(w, 16));
  if (tail) [words[6], words[7]] = tail;
  return words;
}

function embeddedIPv4(w: number[]): string | undefined {
  const zero = (from: number, to: number) => w.slice(from, to).every((x) => x === 0);
  const quad = (hi: number, lo: number) => `${hi >> 8}.${hi & 0xff}.${lo >> 8}.${lo & 0xff}`;
  if (zero(0, 5) && w[5] === 0xffff) return quad(w[6], w[7]); // IPv4-mapped
  if (zero(0, 4) && w[4] === 0xffff && w[5] === 0) return quad(w[6], w[7]); // IPv4-translated (SIIT)
  if (zero(0, 6)) return quad(w[6], w[7]); // deprecated IPv4-compatible
  if (w[0] === 0x64 && w[1] === 0xff9b && zero(2, 6)) return quad(w[6], w[7]); // NAT64
  if (w[0] === 0x2002) return quad(w[1], w[2]); // 6to4
  return undefined;
}

export const BLOCKED_ADDRESS_CODE = 'ERR_WEBHOOK_BLOCKED_ADDRESS';

/** Raised at connect time when the target is (or resolves to) a private address. */
export class BlockedAddressError extends Error {
  readonly code = BLOCKED_ADDRESS_CODE;
  constructor(
    readonly host: string,
    readonly address: string,
  ) {
    const what = isLinkLocalAddress(address) ? 'a link-local or cloud metadata address' : 'a private, loopback or reserved address';
    // The address a name resolved to is not told: it would map the internal network for whoever
    // chose the URL (kept on the error's `address` for our own logs).
    super(host === address ? `refused to connect to ${address}: ${what}` : `refused to connect to ${host}: it resolves to ${what}`);
    this.name = 'BlockedAddressError';
  }
}

export const WebhookUrlProblem = {
  invalid: 'invalid',
  protocol: 'protocol',
  credentials: 'credentials',
  unresolvable: 'unresolvable',
  private_address: 'private_address',
} as const;
export type WebhookUrlProblem = (typeof WebhookUrlProblem)[keyof typeof WebhookUrlProblem];

/** A subscription URL we will not deliver to; a 400 on field `url`. */
export class WebhookUrlError extends AppError {
  constructor(
    readonly problem: WebhookUrlProblem,
    detail: string,
  ) {
    super('validation', detail, [{ field: 'url', message: detail }]);
    this.name = 'WebhookUrlError';
  }
}

export type ResolvedAddress = { address: string; family: number };
export type ResolveHost = (hostname: string) => Promise<readonly ResolvedAddress[]>;

/** Every address the system resolver gives, in its order (what a connection would try). */
export const systemResolve: ResolveHost = (hostname) => lookup(hostname, { all: true, verbatim: true });

const MAX_URL_LENGTH = 2048;
const PRIVATE_HINT = 'private addresses are refused unless the server runs with WEBHOOK_ALLOW_PRIVATE_URLS=true';

/**
 * Validates a subscription URL: absolute http(s), no user:password (it would end up in logs; use
 * custom headers), and — unless private URLs are allowed — a host whose every resolved address is
 * public. One private address is enough to refuse: a connection may pick any of them. With
 * `allowPrivate` the host is not resolved at all (a local receiver's name may only resolve from
 * the worker's network). Resolves to the parsed URL; rejects with `WebhookUrlError`.
 */
export async function checkWebhookUrl(url: string, opts: { allowPrivate: boolean; resolve?: ResolveHost }): Promise<URL> {
  if (url.length > MAX_URL_LENGTH) {
    throw new WebhookUrlError('invalid', `url must be at most ${MAX_URL_LENGTH} characters`);
  }
  const parsed = parseUrl(url);
  if (!parsed) throw new WebhookUrlError('invalid', 'url must be an absolute URL like https://example.com/hooks/ventros');
  if (parsed.protocol !== 'https:' && parsed.protocol !== 'http:') {
    throw new WebhookUrlError('protocol', `url must use http or https, not ${parsed.protocol.replace(/:$/, '')}`);
  }
  if (parsed.username || parsed.password) {
    throw new WebhookUrlError('credentials', 'url must not contain a user name or password; send credentials with custom headers');
  }
  // WHATWG URL has already normalised odd IPv4 spellings (2130706433, 0x7f.1) to dotted quads.
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1');
  if (opts.allowPrivate) {
    if ((isIPv4(host) || isIPv6(host)) && isLinkLocalAddress(host)) {
      throw new WebhookUrlError('private_address', `url points to ${host}, a link-local or cloud metadata address; refused even where private addresses are allowed`);
    }
    return parsed;
  }

  if (isIPv4(host) || isIPv6(host)) {
    if (isPrivateAddress(host)) throw new WebhookUrlError('private_address', `url points to ${host}; ${PRIVATE_HINT}`);
    return parsed;
  }
  // RFC 6761: these names are loopback whatever a resolver says.
  if (host === 'localhost' || host.endsWith('.localhost')) {
    throw new WebhookUrlError('private_address', `url points to ${host}; ${PRIVATE_HINT}`);
  }
  let addresses: readonly ResolvedAddress[];
  try {
    addresses = await (opts.resolve ?? systemResolve)(host);
  } catch (err) {
    const code = (err as { code?: unknown })?.code;
    throw new WebhookUrlError('unresolvable', `url host ${host} could not be resolved${typeof code === 'string' ? ` (${code})` : ''}`);
  }
  if (addresses.length === 0) throw new WebhookUrlError('unresolvable', `url host ${host} has no addresses`);
  const blocked = addresses.find((a) => isPrivateAddress(a.address));
  if (blocked) {
    // Which private address is not told: it would map the internal network for whoever asks.
    throw new WebhookUrlError('private_address', `url host ${host} resolves to a private, loopback or reserved address; ${PRIVATE_HINT}`);
  }
  return parsed;
}

/**
 * A `net.connect` lookup that resolves with `resolve` and refuses when any address is private —
 * the check happens on the very answer the socket connects with, so a rebinding DNS server gains
 * nothing between save time and delivery.
 */
export function guardedLookup(resolve: ResolveHost = systemResolve, refused: (ip: string) => boolean = isPrivateAddress, dropRefused = false): LookupFunction {
  return (hostname, options, callback) => {
    resolve(hostname).then(
      (answer) => {
        // Strict (private addresses refused): one refused address refuses the name, whichever the
        // socket would pick. Where private ones are allowed, a name may well have a link-local
        // address beside its LAN one (mDNS `.local` names, fe80::): that one is left out.
        const blocked = answer.find((a) => refused(a.address));
        const addresses = dropRefused ? answer.filter((a) => !refused(a.address)) : answer;
        if (blocked && (!dropRefused || addresses.length === 0)) return callback(new BlockedAddressError(hostname, blocked.address), '', 0);
        const usable = options.family ? addresses.filter((a) => a.family === options.family) : addresses;
        if (usable.length === 0) {
          const err: NodeJS.ErrnoException = new Error(`getaddrinfo ENOTFOUND ${hostname}`);
          err.code = 'ENOTFOUND';
          return callback(err, '', 0);
        }
        // Node asks for all addresses when it races IPv4/IPv6 (autoSelectFamily), one otherwise.
        if (options.all) return callback(null, usable.map((a) => ({ address: a.address, family: a.family })));
        callback(null, usable[0].address, usable[0].family);
      },
      (err: NodeJS.ErrnoException) => callback(err, '', 0),
    );
  };
}

/**
 * The undici dispatcher deliveries go through. Every new connection is checked — against every
 * private address, or with `allowPrivate` against link-local ones only: an IP-literal host directly (Node skips the lookup for those), a name through
 * `guardedLookup`. Redirects are never followed: undici 7 follows them only through the redirect
 * interceptor, which this agent does not compose — a 3xx comes back as a 3xx (a redirect would
 * otherwise be a way around the guard). `timeoutMs` bounds connecting, waiting for headers and
 * body inactivity; `postWebhook` adds the total per-attempt deadline on top.
 */
export function makeGuardedDispatcher(opts: {
  allowPrivate: boolean;
  timeoutMs: number;
  resolve?: ResolveHost;
  connections?: number;
}): Agent {
  const { allowPrivate, timeoutMs } = opts;
  const common = { headersTimeout: timeoutMs, bodyTimeout: timeoutMs, connections: opts.connections ?? null };
  // Allowing private addresses still leaves link-local ones out (the cloud metadata service).
  const refused = allowPrivate ? isLinkLocalAddress : isPrivateAddress;
  const connectGuarded = buildConnector({ timeout: timeoutMs, lookup: guardedLookup(opts.resolve, refused, allowPrivate) });
  const connect: buildConnector.connector = (target, callback) => {
    const host = target.hostname.replace(/^\[(.*)\]$/, '$1');
    if ((isIPv4(host) || isIPv6(host)) && refused(host)) {
      // Asynchronously, as a real connection failure would arrive.
      process.nextTick(callback, new BlockedAddressError(host, host), null);
      return;
    }
    connectGuarded(target, callback);
  };
  return new Agent({ ...common, connect });
}
