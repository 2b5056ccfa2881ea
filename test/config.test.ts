import { describe, expect, it } from 'vitest';
import { ConfigError, loadConfig, parseDuration } from '../src/config.ts';

/** The ConfigError loadConfig throws for `env`, or undefined. */
function refusal(env: Record<string, string>, opts?: Parameters<typeof loadConfig>[1]): ConfigError | undefined {
  try {
    loadConfig(env, opts);
  } catch (e) {
    if (e instanceof ConfigError) return e;
    throw e;
  }
  return undefined;
}

describe('configuration', () => {
  it('has the contract defaults when nothing is set', () => {
    const c = loadConfig({});
    expect(c).toMatchObject({
      port: 8080,
      host: '127.0.0.1',
      dataDir: './data',
      publicUrl: 'http://127.0.0.1:8080',
      sessionTimeoutMinutes: 30,
      outboxPollMs: 1000,
      webhookRetryScheduleMs: [5000, 300000, 1800000, 7200000, 18000000, 36000000, 36000000],
      webhookTimeoutMs: 15000,
      webhookConcurrency: 64,
      webhookAllowPrivateUrls: false,
      consumerRetryDelaysMs: [1000, 5000, 30000, 120000],
      replyRetryDelaysMs: [5000, 30000, 120000, 300000, 600000, 900000, 1800000],
      eventRetentionDays: 30,
      webhookRetentionDays: 30,
      databasePoolMax: 20,
    });
    expect(Object.isFrozen(c)).toBe(true);
  });

  it.each([
    [{ PORT: 'abc' }, 'PORT'],
    [{ PORT: '70000' }, 'PORT'],
    [{ DATABASE_URL: 'not a url', SECRET_KEY: 'x'.repeat(32) }, 'DATABASE_URL'],
    [{ DATABASE_URL: 'mysql://h/db', SECRET_KEY: 'x'.repeat(32) }, 'DATABASE_URL'],
    [{ AMQP_URL: 'http://rabbit' }, 'AMQP_URL'],
    [{ WEBHOOK_RETRY_SCHEDULE: '5s,soon' }, 'WEBHOOK_RETRY_SCHEDULE'],
    [{ CONSUMER_RETRY_DELAYS: '1 minute' }, 'CONSUMER_RETRY_DELAYS'],
    [{ WEBHOOK_ALLOW_PRIVATE_URLS: 'maybe' }, 'WEBHOOK_ALLOW_PRIVATE_URLS'],
    [{ CLOUD_API_ALLOW_PRIVATE_URLS: 'yes please' }, 'CLOUD_API_ALLOW_PRIVATE_URLS'],
    [{ TRUST_PROXY: 'the load balancer' }, 'TRUST_PROXY'],
    [{ CORS_ORIGINS: 'https://app.example.com/' }, 'CORS_ORIGINS'],
    [{ CORS_ORIGINS: 'app.example.com' }, 'CORS_ORIGINS'],
    [{ CORS_ORIGINS: 'https://app.example.com, ftp://files.example.com' }, 'CORS_ORIGINS'],
    [{ LOG_LEVEL: 'loud' }, 'LOG_LEVEL'],
    [{ METRICS_TOKEN: 'short' }, 'METRICS_TOKEN'],
    [{ METRICS_TOKEN: 'has spaces in it, sixteen+' }, 'METRICS_TOKEN'],
    [{ SECRET_KEY: 'short' }, 'SECRET_KEY'],
    [{ DATABASE_URL: 'postgres://h/db' }, 'SECRET_KEY'],
    [{ PUBLIC_URL: 'ftp://x' }, 'PUBLIC_URL'],
    [{ WEBHOOK_RETENTION_DAYS: 'thirty' }, 'WEBHOOK_RETENTION_DAYS'],
    [{ WEBHOOK_RETENTION_DAYS: '0' }, 'WEBHOOK_RETENTION_DAYS'],
    [{ WEBHOOK_RETENTION_DAYS: '36501' }, 'WEBHOOK_RETENTION_DAYS'],
    [{ WEBHOOK_RETENTION_DAYS: '7.5' }, 'WEBHOOK_RETENTION_DAYS'],
    [{ DATABASE_POOL_MAX: '1' }, 'DATABASE_POOL_MAX'],
    [{ DATABASE_POOL_MAX: 'lots' }, 'DATABASE_POOL_MAX'],
    [{ DATABASE_POOL_MAX: '1001' }, 'DATABASE_POOL_MAX'],
  ])('rejects %o naming %s', (env, variable) => {
    let err: unknown;
    try {
      loadConfig(env);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).variable).toBe(variable);
    expect((err as Error).message).toContain(variable);
  });

  it('parses durations in every unit', () => {
    expect(['250ms', '5s', '2m', '1h', '1d', '1500'].map(parseDuration)).toEqual([250, 5000, 120000, 3600000, 86400000, 1500]);
    expect(parseDuration('5 minutes')).toBeUndefined();
  });

  it('reads WEBHOOK_RETENTION_DAYS from 1 to 36500 days', () => {
    expect(loadConfig({ WEBHOOK_RETENTION_DAYS: '1' }).webhookRetentionDays).toBe(1);
    expect(loadConfig({ WEBHOOK_RETENTION_DAYS: ' 90 ' }).webhookRetentionDays).toBe(90);
    expect(loadConfig({ WEBHOOK_RETENTION_DAYS: '36500' }).webhookRetentionDays).toBe(36500);
    expect(() => loadConfig({ WEBHOOK_RETENTION_DAYS: '-1' })).toThrow(/^WEBHOOK_RETENTION_DAYS: expected an integer from 1 to 36500, got "-1"$/);
  });

  it('reads TRUST_PROXY as off, any peer, or proxy addresses, and names a bad entry', () => {
    expect(loadConfig({}).trustProxy).toBe(false);
    expect(loadConfig({ TRUST_PROXY: 'TRUE' }).trustProxy).toBe(true);
    expect(loadConfig({ TRUST_PROXY: 'loopback, 10.0.0.0/8,fd00::1, fd00::/8, 192.0.2.1/32' }).trustProxy).toEqual(['loopback', '10.0.0.0/8', 'fd00::1', 'fd00::/8', '192.0.2.1/32']);
    for (const bad of ['proxy.internal', '10.0.0.0/33', '10.0.0.0/0', '10.0.0.0/x', '1.2.3.4/8/8', 'fd00::/129']) {
      expect(() => loadConfig({ TRUST_PROXY: `10.0.0.1, ${bad}` }), bad).toThrow(new RegExp(`^TRUST_PROXY: .*got "${bad.replace(/[./]/g, '\\$&')}"$`));
    }
    expect(() => loadConfig({ TRUST_PROXY: '2' })).toThrow(/a hop count is not taken/);
  });

  it('reads CORS_ORIGINS as origins or *, and says what a near miss should have been', () => {
    expect(loadConfig({ CORS_ORIGINS: 'https://app.example.com, http://localhost:5173,' }).corsOrigins).toEqual(['https://app.example.com', 'http://localhost:5173']);
    expect(loadConfig({ CORS_ORIGINS: '*' }).corsOrigins).toEqual(['*']);
    expect(() => loadConfig({ CORS_ORIGINS: 'https://app.example.com/' })).toThrow('did you mean "https://app.example.com"?');
  });

  it('builds the default PUBLIC_URL as a URL: an IPv6 HOST in brackets, a wildcard HOST as 127.0.0.1', () => {
    const cases: Array<[string, string]> = [
      ['127.0.0.1', 'http://127.0.0.1:8080'],
      ['localhost', 'http://localhost:8080'],
      ['::1', 'http://[::1]:8080'],
      ['fd00::5', 'http://[fd00::5]:8080'],
      ['0.0.0.0', 'http://127.0.0.1:8080'],
      ['::', 'http://127.0.0.1:8080'],
      ['0:0:0:0:0:0:0:0', 'http://127.0.0.1:8080'],
    ];
    for (const [host, expected] of cases) {
      const { publicUrl } = loadConfig({ HOST: host });
      expect(publicUrl, host).toBe(expected);
      expect(new URL(`${publicUrl}/api/v1/webhooks/waha/x`).port, host).toBe('8080');
    }
    expect(loadConfig({ HOST: '::', PUBLIC_URL: 'https://crm.example.com' }).publicUrl).toBe('https://crm.example.com');
    // A HOST no URL can name (an IPv6 zone) needs PUBLIC_URL rather than giving a broken one.
    expect(refusal({ HOST: 'fe80::1%eth0' })?.variable).toBe('PUBLIC_URL');
    expect(loadConfig({ HOST: 'fe80::1%eth0', PUBLIC_URL: 'http://[fe80::1]:8080' }).publicUrl).toBe('http://[fe80::1]:8080');
  });

  it('refuses PORT=0 for the service unless PUBLIC_URL is set: its webhook URLs would name port 0', () => {
    const err = refusal({ PORT: '0' }, { service: true });
    expect(err?.variable).toBe('PORT');
    expect(err?.message).toMatch(/^PORT: .*PUBLIC_URL/);
    expect(loadConfig({ PORT: '0', PUBLIC_URL: 'https://crm.example.com' }, { service: true }).publicUrl).toBe('https://crm.example.com');
    expect(loadConfig({ PORT: '9000' }, { service: true }).publicUrl).toBe('http://127.0.0.1:9000');
    // Tests and embedders listen on port 0 and read the bound address from the server.
    expect(loadConfig({ PORT: '0' }).port).toBe(0);
  });

  it('refuses a retry delay above 2^32-1 ms (RabbitMQ\'s longest x-message-ttl), naming the variable', () => {
    for (const name of ['CONSUMER_RETRY_DELAYS', 'WEBHOOK_RETRY_SCHEDULE']) {
      for (const bad of ['1s,50d', '4294967296', '1s,1200h', '99999999999999999999d']) {
        const err = refusal({ [name]: bad });
        expect(err?.variable, `${name}=${bad}`).toBe(name);
        expect(err?.message, `${name}=${bad}`).toMatch(new RegExp(`^${name}: a delay may be at most 4294967295 ms \\(about 49 days\\), got "`));
      }
    }
    expect(loadConfig({ CONSUMER_RETRY_DELAYS: '1s,49d,4294967295' }).consumerRetryDelaysMs).toEqual([1000, 49 * 86_400_000, 4_294_967_295]);
    expect(loadConfig({ WEBHOOK_RETRY_SCHEDULE: '5s,49d' }).webhookRetryScheduleMs).toEqual([5000, 49 * 86_400_000]);
  });

  it('strips a trailing slash from PUBLIC_URL', () => {
    expect(loadConfig({ PUBLIC_URL: 'https://crm.example.com/' }).publicUrl).toBe('https://crm.example.com');
  });
});
