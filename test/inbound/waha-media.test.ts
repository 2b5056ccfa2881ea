// GET /messages/{id}/media for WAHA messages: WAHA names its files by the address it believes it
// has (`http://localhost:3000/api/files/…` in the fixtures), behind its API key. The file is fetched
// from the channel's base_url — a fake WAHA file server here — with the channel's API key and
// streamed through; a URL that is not one of WAHA's files (a presigned S3 link) is a redirect.
import { createServer, type IncomingHttpHeaders } from 'node:http';
import type { AddressInfo } from 'node:net';
import { describe, expect, it } from 'vitest';
import { wahaFilePath, wahaFileUrl } from '../../src/channels/waha-media.ts';
import { loadConfig } from '../../src/config.ts';
import { buildApp } from '../../src/http/app.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { onCleanup, uniqueName, waitFor } from '../support/env.ts';
import { fixture, SECRET_KEY, startInbound, type Channel } from './harness.ts';

const API_KEY = 'waha-api-key-media';

// The fake WAHA: its files under /api/files/<session>/<name>, only with the API key; `files`
// holds what it has (a test deletes one to play WAHA's files lifetime).
type Call = { method: string; path: string; headers: IncomingHttpHeaders };
const calls: Call[] = [];
const files = new Map<string, { type: string; bytes: Buffer }>();
let answerWith: number | undefined; // a status every request gets instead, when set
const waha = createServer((req, res) => {
  req.resume();
  calls.push({ method: req.method ?? '', path: req.url ?? '', headers: req.headers });
  if (answerWith !== undefined) {
    res.writeHead(answerWith, { 'content-type': 'application/json' }).end('{"message":"nope"}');
    return;
  }
  if (req.headers['x-api-key'] !== API_KEY) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"message":"Unauthorized"}');
    return;
  }
  const name = (req.url ?? '').replace(/^\/waha-prefix/, '');
  const file = files.get(name);
  if (!file) {
    res.writeHead(404, { 'content-type': 'application/json' }).end('{"message":"Cannot GET"}');
    return;
  }
  res.writeHead(200, { 'content-type': file.type, 'content-length': String(file.bytes.length) });
  res.end(req.method === 'HEAD' ? undefined : file.bytes);
});
await new Promise<void>((resolve) => waha.listen(0, '127.0.0.1', resolve));
onCleanup(() => new Promise<void>((resolve) => waha.close(() => resolve())));
const wahaUrl = `http://127.0.0.1:${(waha.address() as AddressInfo).port}`;

const t = await startInbound();
const channel = await t.createChannel({ base_url: wahaUrl, api_key: API_KEY, session: 'loja-principal' });

/** Our id of the channel's message whose provider id ends with `key`, once stored. */
const storedId = (ch: Channel, key: string) =>
  waitFor(async () => (await t.db.query('SELECT id FROM messages WHERE channel_id = $1 AND external_id LIKE $2', [ch.id, `%${key}`])).rows[0]?.id as string | undefined, `${key} stored`, 30_000);

/** The GOWS image fixture as a new message (its own id) whose media URL is `url`; returns our message id once stored. */
async function imageMessage(ch: Channel, url: string, mimetype: string | null = 'image/jpeg'): Promise<string> {
  const body = fixture('gows-image-caption');
  const key = uniqueName('IMG').replace(/[^A-Za-z0-9]/g, '').toUpperCase();
  body.payload.id = `false_5511900000001@c.us_${key}`;
  body.payload._data.Info.ID = key;
  body.payload.media = { url, mimetype, filename: null };
  expect((await t.post(ch, body)).status).toBe(200);
  return storedId(ch, key);
}

const media = (id: string, method: 'GET' | 'HEAD' = 'GET', app = t.app) =>
  app.inject({ method, url: `/api/v1/messages/${id}/media`, headers: { authorization: `Bearer ${t.key}` } });

describe('WAHA media through GET /messages/{id}/media', () => {
  it('streams the fixture’s image from the channel’s WAHA with its API key, though WAHA named it on localhost', async () => {
    const jpeg = Buffer.from([0xff, 0xd8, 0xff, 0xe0, 1, 2, 3, 4, 0xff, 0xd9]);
    files.set('/api/files/loja-principal/3EB0DEV00000000IMG01.jpeg', { type: 'image/jpeg', bytes: jpeg });
    const body = fixture('gows-image-caption');
    expect((await t.post(channel, body)).status).toBe(200);
    const id = await storedId(channel, '3EB0DEV00000000IMG01');
    // The API still shows the URL WAHA gave.
    const read = await t.api('GET', `/messages/${id}`);
    expect(read.json.media.url).toBe('http://localhost:3000/api/files/loja-principal/3EB0DEV00000000IMG01.jpeg');

    const before = calls.length;
    const r = await media(id);
    expect(r.statusCode).toBe(200);
    expect(r.rawPayload.equals(jpeg)).toBe(true);
    expect(r.headers['content-type']).toBe('image/jpeg');
    expect(r.headers['content-length']).toBe(String(jpeg.length));
    const call = calls.slice(before).find((c) => c.method === 'GET')!;
    expect(call.path).toBe('/api/files/loja-principal/3EB0DEV00000000IMG01.jpeg');
    expect(call.headers['x-api-key']).toBe(API_KEY);
    expect(call.headers['accept-encoding']).toBe('identity');
    expect(JSON.stringify(r.headers)).not.toContain(API_KEY);
    // Served from the API's own address: never sniffed, never run as a page.
    expect(r.headers['x-content-type-options']).toBe('nosniff');
    expect(r.headers['content-security-policy']).toBe("default-src 'none'; sandbox");
  });

  it('fetches no file of another session, nor the media_url of a reply sent through the API: those are redirects', async () => {
    files.set('/api/files/outra-loja/segredo.jpeg', { type: 'image/jpeg', bytes: Buffer.from('not yours') });
    const before = calls.length;
    // Another session's file on the same WAHA (another project's channel, perhaps), named in a webhook.
    const other = await imageMessage(channel, 'http://localhost:3000/api/files/outra-loja/segredo.jpeg');
    const r = await media(other);
    expect(r.statusCode).toBe(302);
    expect(r.headers.location).toBe('http://localhost:3000/api/files/outra-loja/segredo.jpeg');
    // A reply whose media_url the caller chose, naming a file of this very session.
    files.set('/api/files/loja-principal/alheio.jpeg', { type: 'image/jpeg', bytes: Buffer.from('x') });
    const sent = await t.api('POST', '/messages', { channel_id: channel.id, phone: '+5511900000001', type: 'image', media_url: 'http://localhost:3000/api/files/loja-principal/alheio.jpeg' });
    expect(sent.status).toBe(202);
    const reply = await media(sent.json.id);
    expect(reply.statusCode).toBe(302);
    expect(reply.headers.location).toBe('http://localhost:3000/api/files/loja-principal/alheio.jpeg');
    expect(calls.slice(before).filter((c) => c.path.startsWith('/api/files/'))).toEqual([]);
  });

  it('streams a file of a message another client of WAHA’s API sent (WAHA’s source "api")', async () => {
    files.set('/api/files/loja-principal/crm2.jpeg', { type: 'image/jpeg', bytes: Buffer.from('from another integration') });
    const body = fixture('gows-image-caption');
    const key = uniqueName('API').replace(/[^A-Za-z0-9]/g, '').toUpperCase();
    body.payload = { ...body.payload, id: `true_5511900000001@c.us_${key}`, fromMe: true, source: 'api', media: { url: 'http://localhost:3000/api/files/loja-principal/crm2.jpeg', mimetype: 'image/jpeg', filename: null } };
    body.payload._data.Info = { ...body.payload._data.Info, ID: key, IsFromMe: true };
    expect((await t.post(channel, body)).status).toBe(200);
    const id = await storedId(channel, key);
    expect((await t.api('GET', `/messages/${id}`)).json.metadata.source).toBe('api');
    const r = await media(id);
    expect(r.statusCode).toBe(200);
    expect(r.body).toBe('from another integration');
  });

  it('serves a type that is not one as application/octet-stream', async () => {
    files.set('/api/files/loja-principal/t.bin', { type: 'image/jpeg', bytes: Buffer.from('x') });
    for (const bad of ['image/jpeg\r\nset-cookie: a=1', 'image/jpeg; name="a\u2028b"', 'imagem/jpé']) {
      const id = await imageMessage(channel, 'http://localhost:3000/api/files/loja-principal/t.bin', bad);
      const r = await media(id);
      expect(r.statusCode, bad).toBe(200);
      expect(r.headers['content-type'], bad).toBe('application/octet-stream');
      expect(r.headers['set-cookie']).toBeUndefined();
    }
  });

  it('keeps the path of a base_url behind a prefix, and the file’s query string', async () => {
    const prefixed = await t.createChannel({ base_url: `${wahaUrl}/waha-prefix/`, api_key: API_KEY, session: 'loja-principal' });
    files.set('/api/files/loja-principal/doc.pdf?v=2', { type: 'application/pdf', bytes: Buffer.from('%PDF-1.4') });
    const id = await imageMessage(prefixed, 'https://waha.public.example/waha-prefix/api/files/loja-principal/doc.pdf?v=2', 'application/pdf');
    const before = calls.length;
    const r = await media(id);
    expect(r.statusCode).toBe(200);
    expect(r.body).toBe('%PDF-1.4');
    expect(calls.slice(before).map((c) => c.path)).toEqual(['/waha-prefix/api/files/loja-principal/doc.pdf?v=2']);
  });

  it('answers 404, naming WAHA’s files lifetime, once WAHA has deleted the file', async () => {
    files.set('/api/files/loja-principal/gone.jpeg', { type: 'image/jpeg', bytes: Buffer.from('x') });
    const id = await imageMessage(channel, 'http://localhost:3000/api/files/loja-principal/gone.jpeg');
    expect((await media(id)).statusCode).toBe(200);
    files.delete('/api/files/loja-principal/gone.jpeg');
    const r = await media(id);
    expect(r.statusCode).toBe(404);
    expect(r.json().detail).toContain('WHATSAPP_FILES_LIFETIME');
  });

  it('answers 422 when WAHA refuses the channel’s API key, 503 when it fails or cannot be reached', async () => {
    const wrongKey = await t.createChannel({ base_url: wahaUrl, api_key: 'not-the-key', session: 'loja-principal' });
    files.set('/api/files/loja-principal/k.jpeg', { type: 'image/jpeg', bytes: Buffer.from('x') });
    const refused = await media(await imageMessage(wrongKey, 'http://localhost:3000/api/files/loja-principal/k.jpeg'));
    expect(refused.statusCode).toBe(422);
    expect(refused.json().detail).toContain('API key');

    const id = await imageMessage(channel, 'http://localhost:3000/api/files/loja-principal/k.jpeg');
    answerWith = 500;
    try {
      const failing = await media(id);
      expect(failing.statusCode).toBe(503);
      expect(failing.json().detail).toContain('WAHA answered 500');
    } finally {
      answerWith = undefined;
    }

    // A port nothing listens on.
    const closed = createServer();
    await new Promise<void>((resolve) => closed.listen(0, '127.0.0.1', resolve));
    const deadUrl = `http://127.0.0.1:${(closed.address() as AddressInfo).port}`;
    await new Promise<void>((resolve) => closed.close(() => resolve()));
    const dead = await t.createChannel({ base_url: deadUrl, api_key: API_KEY, session: 'loja-principal' });
    const unreachable = await media(await imageMessage(dead, 'http://localhost:3000/api/files/loja-principal/k.jpeg'));
    expect(unreachable.statusCode).toBe(503);
    expect(unreachable.json().detail).toContain('WAHA could not be reached');
  });

  it('answers a HEAD from WAHA’s HEAD: nothing is downloaded', async () => {
    files.set('/api/files/loja-principal/big.mp4', { type: 'video/mp4', bytes: Buffer.alloc(300_000, 7) });
    const id = await imageMessage(channel, 'http://localhost:3000/api/files/loja-principal/big.mp4', 'video/mp4');
    const before = calls.length;
    const r = await media(id, 'HEAD');
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('video/mp4');
    expect(r.headers['content-length']).toBe('300000');
    expect(r.body).toBe('');
    expect(calls.slice(before).map((c) => c.method)).toEqual(['HEAD']);

    files.delete('/api/files/loja-principal/big.mp4');
    expect((await media(id, 'HEAD')).statusCode).toBe(404);
  });

  it('redirects to a URL that is not one of WAHA’s files (a presigned S3 link): no key goes anywhere', async () => {
    const s3 = 'https://ventros-media.s3.amazonaws.com/loja-principal/IMG.jpeg?X-Amz-Signature=abc';
    const id = await imageMessage(channel, s3);
    const before = calls.length;
    const r = await media(id);
    expect(r.statusCode).toBe(302);
    expect(r.headers.location).toBe(s3);
    expect(calls.length).toBe(before);
  });

  it('fetches nothing from a private base_url where WAHA_ALLOW_PRIVATE_URLS=false: a 422 naming the setting', async () => {
    files.set('/api/files/loja-principal/p.jpeg', { type: 'image/jpeg', bytes: Buffer.from('x') });
    const id = await imageMessage(channel, 'http://localhost:3000/api/files/loja-principal/p.jpeg');
    const strict = await buildApp({ config: loadConfig({ LOG_LEVEL: 'silent', SECRET_KEY, WAHA_ALLOW_PRIVATE_URLS: 'false' }), db: t.db, broker: t.broker, logger: silentLogger });
    onCleanup(() => strict.close());
    const before = calls.length;
    const r = await media(id, 'GET', strict);
    expect(r.statusCode).toBe(422);
    expect(r.json().detail).toContain('WAHA_ALLOW_PRIVATE_URLS=false');
    expect(calls.length).toBe(before);
  });
});

describe('wahaFilePath and wahaFileUrl', () => {
  const base = 'http://waha.internal:3000';
  it('moves a file of the session onto the channel’s base_url', () => {
    const at = (stored: string, b = base) => wahaFileUrl(b, wahaFilePath(stored, 's')!);
    expect(at('http://localhost:3000/api/files/s/a.jpeg')).toBe('http://waha.internal:3000/api/files/s/a.jpeg');
    expect(at('http://localhost:3000/api/files/s/a%20b.jpeg?x=1', `${base}/`)).toBe('http://waha.internal:3000/api/files/s/a%20b.jpeg?x=1');
    expect(at('https://proxy.example/waha/api/files/s/a.jpeg', 'https://waha.example/base//')).toBe('https://waha.example/base/api/files/s/a.jpeg');
    expect(wahaFilePath('http://localhost:3000/api/files/loja%20nova/a.jpeg', 'loja nova')).toBe('/api/files/loja%20nova/a.jpeg');
  });
  it('takes nothing of another session, nothing that leaves its folder, no file, no URL', () => {
    for (const stored of [
      'http://localhost:3000/api/files/other/a.jpeg',
      'http://localhost:3000/api/files/s/../other/a.jpeg',
      'http://localhost:3000/api/files/s/%2e%2e/%2e%2e/sessions',
      'http://localhost:3000/api/files/s/sub/a.jpeg',
      'http://localhost:3000/api/files/s/..%2Fother%2Fa.jpeg',
      'http://localhost:3000/api/files/s/..%5Cother',
      'http://localhost:3000/api/files/s/',
      'http://localhost:3000/api/files/s/%2e',
      'https://bucket.s3.amazonaws.com/s/a.jpeg',
      'not a url',
    ]) {
      expect(wahaFilePath(stored, 's'), stored).toBeUndefined();
    }
    expect(wahaFileUrl('ftp://waha.internal', '/api/files/s/a.jpeg')).toBeUndefined();
    expect(wahaFileUrl('', '/api/files/s/a.jpeg')).toBeUndefined();
  });
});
