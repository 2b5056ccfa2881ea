import type { LookupAddress } from 'node:dns';
import { describe, expect, it } from 'vitest';
import { createServer } from 'node:http';
import { request } from 'undici';
import { providerDispatchers } from '../../src/channels/provider-dispatchers.ts';
import { AppError } from '../../src/errors.ts';
import {
  BlockedAddressError,
  checkWebhookUrl,
  guardedLookup,
  isLinkLocalAddress,
  isPrivateAddress,
  makeGuardedDispatcher,
  WebhookUrlError,
  type ResolveHost,
} from '../../src/webhooks/ssrf-guard.ts';

const resolvesTo =
  (...addresses: string[]): ResolveHost =>
  async () =>
    addresses.map((address) => ({ address, family: address.includes(':') ? 6 : 4 }));
const failsWith = (code: string): ResolveHost => async (host) => {
  throw Object.assign(new Error(`getaddrinfo ${code} ${host}`), { code });
};
const neverCalled: ResolveHost = async () => {
  throw new Error('the resolver must not be consulted');
};

async function rejection(promise: Promise<unknown>): Promise<WebhookUrlError> {
  try {
    await promise;
  } catch (err) {
    expect(err).toBeInstanceOf(WebhookUrlError);
    return err as WebhookUrlError;
  }
  throw new Error('expected a rejection');
}

describe('isPrivateAddress', () => {
  it.each([
    '127.0.0.1',
    '127.255.255.254',
    '10.0.0.1',
    '172.16.0.1',
    '172.31.255.255',
    '192.168.1.1',
    '169.254.169.254',
    '100.64.0.1',
    '100.127.255.255',
    '0.0.0.0',
    '0.1.2.3',
    '224.0.0.1',
    '239.255.255.250',
    '240.0.0.1',
    '255.255.255.255',
    '192.0.2.10',
    '198.18.0.1',
    '::1',
    '::',
    '[::1]',
    'fc00::1',
    'fd12:3456:789a::1',
    'fe80::1',
    'fe80::1%eth0',
    'ff02::1',
    '::ffff:127.0.0.1',
    '::ffff:7f00:1',
    '::ffff:10.0.0.1',
    '::ffff:169.254.169.254',
    '::127.0.0.1',
    '64:ff9b::a9fe:a9fe',
    '64:ff9b::10.0.0.1',
    '64:ff9b:1::8.8.8.8',
    '2002:c0a8:101::1',
    '2001:db8::1',
    'not-an-ip',
    '',
  ])('refuses %s', (ip) => {
    expect(isPrivateAddress(ip)).toBe(true);
  });

  it.each([
    '8.8.8.8',
    '1.1.1.1',
    '93.184.216.34',
    '172.32.0.1',
    '172.15.255.255',
    '100.128.0.1',
    '169.255.0.1',
    '223.255.255.255',
    '2606:4700:4700::1111',
    '2001:4860:4860::8888',
    '::ffff:8.8.8.8',
    '64:ff9b::8.8.8.8',
    '2002:808:808::1',
  ])('accepts public %s', (ip) => {
    expect(isPrivateAddress(ip)).toBe(false);
  });
});

describe('checkWebhookUrl', () => {
  const guarded = { allowPrivate: false, resolve: neverCalled };

  it.each([
    'http://127.0.0.1:8080/hook',
    'http://10.0.0.1/hook',
    'http://169.254.169.254/latest/meta-data/',
    'http://[::1]:3000/',
    'http://[::ffff:127.0.0.1]/',
    'http://2130706433/', // 127.0.0.1 spelled as a number
    'http://0x7f.1/',
    'http://0.0.0.0:8080/',
  ])('refuses the private address in %s', async (url) => {
    const err = await rejection(checkWebhookUrl(url, guarded));
    expect(err.problem).toBe('private_address');
    expect(err.message).toMatch(/WEBHOOK_ALLOW_PRIVATE_URLS=true/);
  });

  it.each(['http://localhost:5678/webhook', 'http://LOCALHOST/', 'http://api.localhost/'])(
    'refuses %s without asking DNS',
    async (url) => {
      expect((await rejection(checkWebhookUrl(url, guarded))).problem).toBe('private_address');
    },
  );

  it('refuses localhost with the system resolver too', async () => {
    expect((await rejection(checkWebhookUrl('http://localhost/', { allowPrivate: false }))).problem).toBe('private_address');
  });

  it('refuses a hostname that resolves to loopback', async () => {
    const err = await rejection(
      checkWebhookUrl('https://hooks.example.com/in', { allowPrivate: false, resolve: resolvesTo('127.0.0.1') }),
    );
    expect(err.problem).toBe('private_address');
    expect(err.message).toContain('hooks.example.com resolves to a private, loopback or reserved address');
    expect(err.message).not.toContain('127.0.0.1'); // which one, a tenant does not learn
  });

  it('refuses a hostname when any one of its addresses is private', async () => {
    const resolve = resolvesTo('93.184.216.34', '2606:2800:220:1::1', 'fd00::5');
    expect((await rejection(checkWebhookUrl('https://hooks.example.com/', { allowPrivate: false, resolve }))).problem).toBe(
      'private_address',
    );
  });

  it('accepts public addresses and hostnames that resolve only to public addresses', async () => {
    const url = await checkWebhookUrl('https://hooks.example.com/in?x=1', {
      allowPrivate: false,
      resolve: resolvesTo('93.184.216.34', '2606:2800:220:1::1'),
    });
    expect(url.href).toBe('https://hooks.example.com/in?x=1');
    await expect(checkWebhookUrl('http://93.184.216.34:8080/h', guarded)).resolves.toBeInstanceOf(URL);
    await expect(checkWebhookUrl('https://[2606:4700:4700::1111]/h', guarded)).resolves.toBeInstanceOf(URL);
  });

  it('accepts private targets, without resolving, when private URLs are allowed', async () => {
    await expect(checkWebhookUrl('http://127.0.0.1:5678/webhook', { allowPrivate: true, resolve: neverCalled })).resolves.toBeInstanceOf(URL);
    await expect(checkWebhookUrl('http://n8n:5678/webhook', { allowPrivate: true, resolve: neverCalled })).resolves.toBeInstanceOf(URL);
  });

  it.each([
    ['not a url', 'invalid', /absolute URL/],
    ['/relative/path', 'invalid', /absolute URL/],
    ['ftp://example.com/x', 'protocol', /http or https, not ftp/],
    ['file:///etc/passwd', 'protocol', /not file/],
    ['https://user:pass@example.com/', 'credentials', /user name or password/],
    ['https://token@example.com/', 'credentials', /user name or password/],
    [`https://example.com/${'a'.repeat(2100)}`, 'invalid', /at most 2048/],
  ])('refuses %s', async (url, problem, message) => {
    const err = await rejection(checkWebhookUrl(url, { allowPrivate: true }));
    expect(err.problem).toBe(problem);
    expect(err.message).toMatch(message);
  });

  it('reports a host that does not resolve', async () => {
    const err = await rejection(checkWebhookUrl('https://nope.example.com/', { allowPrivate: false, resolve: failsWith('ENOTFOUND') }));
    expect(err.problem).toBe('unresolvable');
    expect(err.message).toBe('url host nope.example.com could not be resolved (ENOTFOUND)');
    const empty = await rejection(checkWebhookUrl('https://nope.example.com/', { allowPrivate: false, resolve: resolvesTo() }));
    expect(empty.problem).toBe('unresolvable');
  });

  it('is a 400 validation error on the url field', async () => {
    const err = await rejection(checkWebhookUrl('http://10.1.2.3/', guarded));
    expect(err).toBeInstanceOf(AppError);
    expect(err.code).toBe('validation');
    expect(err.status).toBe(400);
    expect(err.errors).toEqual([{ field: 'url', message: err.message }]);
  });
});

describe('guardedLookup', () => {
  const lookupOnce = (resolve: ResolveHost, all: boolean, family?: number) =>
    new Promise<{ err: NodeJS.ErrnoException | null; address: string | LookupAddress[]; family?: number }>((done) =>
      guardedLookup(resolve)('hooks.example.com', { all, ...(family && { family }) }, (err, address, fam) =>
        done({ err, address, family: fam }),
      ),
    );

  it('passes public answers through in both callback shapes', async () => {
    const resolve = resolvesTo('93.184.216.34', '2606:2800:220:1::1');
    expect(await lookupOnce(resolve, false)).toEqual({ err: null, address: '93.184.216.34', family: 4 });
    expect((await lookupOnce(resolve, true)).address).toEqual([
      { address: '93.184.216.34', family: 4 },
      { address: '2606:2800:220:1::1', family: 6 },
    ]);
    expect((await lookupOnce(resolve, false, 6)).address).toBe('2606:2800:220:1::1');
  });

  it('refuses when the answer holds a private address', async () => {
    const { err } = await lookupOnce(resolvesTo('93.184.216.34', '10.0.0.5'), true);
    expect(err).toBeInstanceOf(BlockedAddressError);
    expect(err?.message).toBe('refused to connect to hooks.example.com: it resolves to a private, loopback or reserved address');
    expect((err as BlockedAddressError).address).toBe('10.0.0.5');
  });

  it('passes resolver errors on', async () => {
    expect((await lookupOnce(failsWith('EAI_AGAIN'), false)).err?.code).toBe('EAI_AGAIN');
  });
});

// Where private addresses are allowed (WAHA next to us by default, a local n8n in development),
// link-local ones are still refused: 169.254.169.254 serves a cloud machine's metadata and
// credentials, and a tenant's WAHA base_url or webhook URL must never reach it.
describe('link-local addresses, refused even where private ones are allowed', () => {
  it('knows them in every spelling', () => {
    for (const ip of ['169.254.169.254', '169.254.0.1', '::ffff:169.254.169.254', '[fe80::1]', 'fe80::1%eth0', 'febf::1', '100.100.100.200', 'fd00:ec2::254']) expect(isLinkLocalAddress(ip), ip).toBe(true);
    for (const ip of ['127.0.0.1', '10.0.0.1', '192.168.1.10', '8.8.8.8', '::1', 'fd00::1']) expect(isLinkLocalAddress(ip), ip).toBe(false);
  });

  it('refuses a link-local URL when it is saved', async () => {
    for (const url of ['http://169.254.169.254/latest/meta-data/', 'http://[fe80::1]:8080/hook']) {
      const err = await rejection(checkWebhookUrl(url, { allowPrivate: true, resolve: neverCalled }));
      expect(err.problem, url).toBe('private_address');
      expect(err.message).toMatch(/link-local/);
    }
  });

  it('refuses to connect there, by address or by a name that resolves only there, and reaches a name’s other addresses', async () => {
    const server = createServer((_req, res) => res.end('ok'));
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    const { port } = server.address() as { port: number };
    // local.test as an mDNS name resolves: a LAN (here loopback) address and a link-local one.
    const dispatcher = makeGuardedDispatcher({
      allowPrivate: true,
      timeoutMs: 2_000,
      resolve: async (host) => (host === 'local.test' ? [{ address: 'fe80::1', family: 6 }, { address: '127.0.0.1', family: 4 }] : [{ address: '169.254.169.254', family: 4 }]),
    });
    try {
      const local = await request(`http://local.test:${port}/`, { dispatcher });
      expect(await local.body.text()).toBe('ok');
      for (const url of ['http://169.254.169.254/latest/meta-data/', 'http://metadata.test/latest/meta-data/']) {
        const err = await request(url, { dispatcher }).then(() => undefined, (e: unknown) => e);
        expect(err, url).toBeDefined();
        expect(String((err as Error).message) + String((err as { cause?: Error }).cause?.message ?? ''), url).toMatch(/link-local/);
      }
    } finally {
      await dispatcher.close();
      await new Promise((r) => server.close(r));
    }
  });

  it('guards WAHA calls by default (private addresses allowed, link-local not)', async () => {
    const { waha } = providerDispatchers({ wahaAllowPrivateUrls: true, cloudApiAllowPrivateUrls: false });
    expect(waha).toBeDefined();
    const err = await request('http://169.254.169.254/api/sessions', { dispatcher: waha! }).then(() => undefined, (e: unknown) => e);
    expect(String((err as Error)?.message) + String((err as { cause?: Error })?.cause?.message ?? '')).toMatch(/link-local/);
  });
});

