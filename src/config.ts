// Environment → one typed, frozen configuration. Every variable is parsed here and nowhere else;
// a bad value stops start-up with a message that names the variable and the form it expects.
import { isIP } from 'node:net';
import { parseHttpUrl, parseUrl } from './url.ts';

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    message: string,
  ) {
    super(`${variable}: ${message}`);
    this.name = 'ConfigError';
  }
}

export type Config = Readonly<{
  port: number;
  host: string;
  dataDir: string;
  databaseUrl: string | undefined;
  /** Pooled PostgreSQL connections per process (the LISTEN and the readiness ping have one more each). */
  databasePoolMax: number;
  amqpUrl: string | undefined;
  logLevel: 'fatal' | 'error' | 'warn' | 'info' | 'debug' | 'trace' | 'silent';
  nodeEnv: string;
  publicUrl: string;
  secretKey: string | undefined;
  sessionTimeoutMinutes: number;
  outboxPollMs: number;
  webhookRetryScheduleMs: readonly number[];
  webhookTimeoutMs: number;
  webhookConcurrency: number;
  webhookAllowPrivateUrls: boolean;
  /** Media downloads may reach a Graph API or media URL on a loopback/private address (tests, a local proxy). */
  cloudApiAllowPrivateUrls: boolean;
  wahaAllowPrivateUrls: boolean;
  webhookDisableAfterDays: number;
  consumerRetryDelaysMs: readonly number[];
  /** Between attempts of a reply the provider could not take (unreachable, 5xx, 429): a provider restart must not fail the replies queued meanwhile. */
  replyRetryDelaysMs: readonly number[];
  eventRetentionDays: number;
  webhookRetentionDays: number;
  corsOrigins: readonly string[];
  /**
   * Whom to believe about the client's address (X-Forwarded-For): false (nobody: the connection's
   * address is the client's), true (any peer), or the proxies' addresses/CIDRs. The per-address
   * login limit counts by this address.
   */
  trustProxy: boolean | readonly string[];
  loginTokenTtlHours: number;
  shutdownTimeoutMs: number;
  /** When set, `GET /metrics` answers only a request bearing it (`Authorization: Bearer …`). */
  metricsToken: string | undefined;
}>;

const LOG_LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'] as const;
const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** Parses `500ms`, `5s`, `5m`, `2h`, `1d` (a bare number is milliseconds). */
export function parseDuration(text: string): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(text);
  if (!m) return undefined;
  const ms = Number(m[1]) * DURATION_UNITS[m[2] ?? 'ms'];
  return Number.isFinite(ms) ? Math.round(ms) : undefined;
}

type Env = Record<string, string | undefined>;

function read(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === '' ? undefined : v.trim();
}

function int(env: Env, name: string, def: number, min: number, max: number): number {
  const raw = read(env, name);
  if (raw === undefined) return def;
  if (!/^\d+$/.test(raw) || Number(raw) < min || Number(raw) > max) {
    throw new ConfigError(name, `expected an integer from ${min} to ${max}, got "${raw}"`);
  }
  return Number(raw);
}

function bool(env: Env, name: string, def: boolean): boolean {
  const raw = read(env, name)?.toLowerCase();
  if (raw === undefined) return def;
  if (['true', '1', 'yes', 'on'].includes(raw)) return true;
  if (['false', '0', 'no', 'off'].includes(raw)) return false;
  throw new ConfigError(name, `expected true or false, got "${raw}"`);
}

/**
 * TRUST_PROXY: true, false, or the proxies' addresses and CIDRs (and the names loopback,
 * linklocal, uniquelocal). No hop count: it would believe whatever a client that reaches the port
 * directly writes in X-Forwarded-For (Fastify itself refuses a number for that reason).
 */
function trustProxy(env: Env): boolean | readonly string[] {
  const raw = read(env, 'TRUST_PROXY');
  if (raw === undefined) return false;
  const lower = raw.toLowerCase();
  if (['true', 'false'].includes(lower)) return lower === 'true';
  const entries = raw.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = entries.find((e) => !isProxyAddress(e));
  if (bad !== undefined || entries.length === 0) {
    const hint = /^\d+$/.test(raw) ? ' (a hop count is not taken: name the proxies)' : '';
    throw new ConfigError('TRUST_PROXY', `expected true, false, or proxy addresses/CIDRs (or loopback, linklocal, uniquelocal), got "${bad ?? raw}"${hint}`);
  }
  return Object.freeze(entries);
}

/** An IP address, or an IP with a prefix length its family allows (at least /1), or a range name. */
function isProxyAddress(e: string): boolean {
  if (['loopback', 'linklocal', 'uniquelocal'].includes(e)) return true;
  const m = /^([^/]+)(?:\/(\d{1,3}))?$/.exec(e);
  const family = m ? isIP(m[1]) : 0;
  if (!m || family === 0) return false;
  if (m[2] === undefined) return true;
  const bits = Number(m[2]);
  return bits >= 1 && bits <= (family === 4 ? 32 : 128);
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
  const raw = read(env, name);
  if (raw === undefined) return undefined;
  const parsed = parseUrl(raw);
  if (!parsed) throw new ConfigError(name, `expected a URL like ${protocols[0]}//host:port/…, got "${redact(raw)}"`);
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `expected a ${protocols.join(' or ')} URL, got "${parsed.protocol}"`);
  }
  return raw;
}

/**
 * The longest retry delay: RabbitMQ refuses an `x-message-ttl` above 2^32-1 ms (about 49.7 days),
 * and a consumer's delays become the TTLs of its retry queues.
 */
export const MAX_RETRY_DELAY_MS = 4_294_967_295;

function durations(env: Env, name: string, def: string): number[] {
  const raw = read(env, name) ?? def;
  const parts = raw.split(',').map((p) => p.trim());
  const out = parts.map((p) => parseDuration(p));
  if (parts.length === 0 || out.some((d) => d === undefined)) {
    throw new ConfigError(name, `expected a comma-separated list of durations like 5s,5m,2h, got "${raw}"`);
  }
  const tooLong = parts.find((_, i) => out[i]! > MAX_RETRY_DELAY_MS);
  if (tooLong !== undefined) {
    throw new ConfigError(name, `a delay may be at most ${MAX_RETRY_DELAY_MS} ms (about 49 days), got "${tooLong}"`);
  }
  return out as number[];
}

/** HOST and PORT as the server listens on them (defaults 127.0.0.1 and 8080). */
export function listenAddress(env: Env = process.env): { host: string; port: number } {
  return { host: read(env, 'HOST') ?? '127.0.0.1', port: int(env, 'PORT', 8080, 0, 65535) };
}

/**
 * The base URL a client on this machine reaches a server listening on host:port at: a wildcard
 * address (0.0.0.0, ::) as 127.0.0.1, an IPv6 address in brackets. Undefined when the host cannot
 * be written in a URL (an IPv6 zone, `fe80::1%eth0`).
 */
export function localBaseUrl(host: string, port: number): string | undefined {
  const family = isIP(host);
  const wildcard = (family === 4 && host === '0.0.0.0') || (family === 6 && /^[0:]+$/.test(host));
  const name = wildcard ? '127.0.0.1' : family === 6 ? `[${host}]` : host;
  const base = `http://${name}:${port}`;
  return parseUrl(base)?.hostname ? base : undefined;
}

function redact(u: string): string {
  return u.replace(/\/\/([^:@/]+):([^@/]+)@/, '//$1:***@');
}

/**
 * CORS_ORIGINS: `*`, or origins exactly as a browser sends them in `Origin` (scheme, host, port if
 * not the default; no path, no trailing slash), which is what they are compared with.
 */
function metricsToken(env: Env): string | undefined {
  const raw = read(env, 'METRICS_TOKEN');
  if (raw === undefined) return undefined;
  // What a Bearer credential may hold (RFC 6750 b64token), so a scraper can send it as configured.
  if (!/^[A-Za-z0-9\-._~+/]+=*$/.test(raw)) throw new ConfigError('METRICS_TOKEN', 'letters, digits and - . _ ~ + / only (it is sent as `Authorization: Bearer <token>`)');
  if (raw.length < 16) throw new ConfigError('METRICS_TOKEN', 'at least 16 characters (e.g. `openssl rand -hex 16`)');
  return raw;
}

function corsOrigins(raw: string): string[] {
  const list = raw.split(',').map((s) => s.trim()).filter((s) => s !== '');
  for (const o of list) {
    if (o === '*') continue;
    const origin = parseHttpUrl(o)?.origin;
    if (origin !== o) {
      throw new ConfigError('CORS_ORIGINS', `"${o}" is not an origin as browsers send it${origin ? ` (did you mean "${origin}"?)` : ' (expected http(s)://host[:port])'}`);
    }
  }
  return list;
}

export type LoadOptions = {
  /**
   * As `ventros start` loads it, for a service whose webhook URLs are shown to users: PORT=0 (any
   * free port) needs PUBLIC_URL, since http://HOST:0 reaches nothing. Left off, PORT=0 is taken
   * as tests and embedders use it (they read the bound address from the server).
   */
  service?: boolean;
};

/** PUBLIC_URL when it is not set: where this machine reaches HOST:PORT. */
function defaultPublicUrl(host: string, port: number, service: boolean): string {
  // A test or an embedder listening on port 0 reads the bound address from the server instead.
  if (port === 0 && service) throw new ConfigError('PORT', 'PORT=0 (any free port) needs PUBLIC_URL: the webhook URLs shown to users would name port 0');
  const base = localBaseUrl(host, port);
  if (base === undefined) throw new ConfigError('PUBLIC_URL', `needed: HOST "${host}" cannot be written in a URL`);
  return base;
}

export function loadConfig(env: Env = process.env, opts: LoadOptions = {}): Config {
  const { host, port } = listenAddress(env);
  const logLevel = (read(env, 'LOG_LEVEL') ?? 'info').toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevel)) {
    throw new ConfigError('LOG_LEVEL', `expected one of ${LOG_LEVELS.join(', ')}, got "${logLevel}"`);
  }
  const publicUrl = url(env, 'PUBLIC_URL', ['http:', 'https:']) ?? defaultPublicUrl(host, port, opts.service === true);
  const nodeEnv = read(env, 'NODE_ENV') ?? 'development';
  const databaseUrl = url(env, 'DATABASE_URL', ['postgres:', 'postgresql:']);
  const secretKey = read(env, 'SECRET_KEY');
  if (secretKey !== undefined && secretKey.length < 32) {
    throw new ConfigError('SECRET_KEY', 'expected at least 32 characters (e.g. `openssl rand -hex 32`)');
  }
  if (databaseUrl && secretKey === undefined) {
    // Embedded mode keeps a generated key under DATA_DIR; a shared database needs the same key
    // on every process, so it must be given.
    throw new ConfigError('SECRET_KEY', 'required when DATABASE_URL is set (it encrypts channel credentials at rest; e.g. `openssl rand -hex 32`)');
  }
  const corsRaw = read(env, 'CORS_ORIGINS');
  return Object.freeze({
    port,
    host,
    dataDir: read(env, 'DATA_DIR') ?? './data',
    databaseUrl,
    databasePoolMax: int(env, 'DATABASE_POOL_MAX', 20, 2, 1000),
    amqpUrl: url(env, 'AMQP_URL', ['amqp:', 'amqps:']),
    logLevel: logLevel as Config['logLevel'],
    nodeEnv,
    publicUrl: publicUrl.replace(/\/+$/, ''),
    secretKey,
    sessionTimeoutMinutes: int(env, 'SESSION_TIMEOUT_MINUTES', 30, 1, 7 * 24 * 60),
    outboxPollMs: int(env, 'OUTBOX_POLL_MS', 1000, 10, 3_600_000),
    webhookRetryScheduleMs: Object.freeze(durations(env, 'WEBHOOK_RETRY_SCHEDULE', '5s,5m,30m,2h,5h,10h,10h')),
    webhookTimeoutMs: int(env, 'WEBHOOK_TIMEOUT_MS', 15000, 100, 300_000),
    webhookConcurrency: int(env, 'WEBHOOK_CONCURRENCY', 64, 1, 10_000),
    webhookAllowPrivateUrls: bool(env, 'WEBHOOK_ALLOW_PRIVATE_URLS', false),
    cloudApiAllowPrivateUrls: bool(env, 'CLOUD_API_ALLOW_PRIVATE_URLS', false),
    wahaAllowPrivateUrls: bool(env, 'WAHA_ALLOW_PRIVATE_URLS', true),
    webhookDisableAfterDays: int(env, 'WEBHOOK_DISABLE_AFTER_DAYS', 5, 1, 365),
    consumerRetryDelaysMs: Object.freeze(durations(env, 'CONSUMER_RETRY_DELAYS', '1s,5s,30s,2m')),
    replyRetryDelaysMs: Object.freeze(durations(env, 'REPLY_RETRY_DELAYS', '5s,30s,2m,5m,10m,15m,30m')),
    eventRetentionDays: int(env, 'EVENT_RETENTION_DAYS', 30, 1, 36500),
    webhookRetentionDays: int(env, 'WEBHOOK_RETENTION_DAYS', 30, 1, 36500),
    corsOrigins: Object.freeze(corsRaw ? corsOrigins(corsRaw) : []),
    trustProxy: trustProxy(env),
    loginTokenTtlHours: int(env, 'LOGIN_TOKEN_TTL_HOURS', 24, 1, 24 * 365),
    shutdownTimeoutMs: int(env, 'SHUTDOWN_TIMEOUT_MS', 10_000, 100, 600_000),
    metricsToken: metricsToken(env),
  });
}
