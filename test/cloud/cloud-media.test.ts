// GET /messages/{id}/media: a Cloud media id is looked up on the (fake) Graph API and the file is
// streamed through with the channel token; a WAHA message's URL that is not one of WAHA's own
// files redirects (WAHA's files: waha-media.test.ts); no media, or
// another project's message, is 404. A HEAD looks the media up but downloads nothing. (Deadlines
// while the bytes come: cloud-media-stream.test.ts.)
import { gzipSync } from 'node:zlib';
import { describe, expect, it } from 'vitest';
import { loadConfig } from '../../src/config.ts';
import { buildApp } from '../../src/http/app.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { onCleanup, uniqueName, waitFor } from '../support/env.ts';
import { SECRET_KEY, startInbound, wahaText } from '../inbound/harness.ts';
import { ACCESS_TOKEN, cloudMessage, cloudText, createCloudChannel, graphError, postCloud, startFakeGraph } from './harness.ts';

// The fake Graph API listens on 127.0.0.1: allowed here, refused by default (the last test).
const t = await startInbound({ env: { CLOUD_API_ALLOW_PRIVATE_URLS: 'true' } });
const graph = await startFakeGraph();
const channel = await createCloudChannel(t.api, { api_base_url: graph.url });

const stored = (channelId: string, externalId: string) =>
  waitFor(async () => (await t.db.query('SELECT id FROM messages WHERE channel_id = $1 AND external_id = $2', [channelId, externalId])).rows[0]?.id as string | undefined, `${externalId} stored`, 30_000);
const media = (id: string, key = t.key) => t.app.inject({ method: 'GET', url: `/api/v1/messages/${id}/media`, headers: { authorization: `Bearer ${key}` } });

describe('GET /messages/{id}/media', () => {
  it('streams a Cloud media file, looked up and downloaded with the channel token', async () => {
    const { msg, body } = cloudMessage('5531900000101', 'document', { document: { id: '777000001', mime_type: 'application/pdf', filename: 'nota fiscal.pdf' } });
    expect((await postCloud(t.app, channel.id, body)).status).toBe(200);
    const id = await stored(channel.id, msg.id);
    graph.respond((c) => (c.path === '/v21.0/777000001' ? { status: 200, body: { url: `${graph.url}/download/777000001`, mime_type: 'application/pdf', file_size: 4, id: '777000001' } } : undefined));
    const r = await media(id);
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('application/pdf');
    expect(r.headers['content-disposition']).toBe("inline; filename*=UTF-8''nota%20fiscal.pdf");
    expect(r.body).toBe('JPEG');
    const lookup = graph.calls.find((c) => c.path === '/v21.0/777000001')!;
    const download = graph.calls.find((c) => c.path === '/download/777000001')!;
    expect(lookup.headers.authorization).toBe(`Bearer ${ACCESS_TOKEN}`);
    expect(download.headers.authorization).toBe(`Bearer ${ACCESS_TOKEN}`);
    // The token never reaches the caller.
    expect(JSON.stringify(r.headers)).not.toContain(ACCESS_TOKEN);
  });

  it('passes on the file, not a compressed length, when the media host compresses it anyway', async () => {
    const { msg, body } = cloudMessage('5531900000106', 'document', { document: { id: '777000006', mime_type: 'text/csv', filename: 'big.csv' } });
    await postCloud(t.app, channel.id, body);
    const id = await stored(channel.id, msg.id);
    const original = Buffer.from('nome;telefone\n'.repeat(2000));
    const gzipped = gzipSync(original);
    // Gzipped whatever it was asked, with the compressed length.
    graph.respond((c) =>
      c.path === '/download/777000006' ? { status: 200, raw: gzipped, headers: { 'content-type': 'text/csv', 'content-encoding': 'gzip', 'content-length': String(gzipped.length) } } : undefined,
    );
    const r = await media(id);
    expect(r.statusCode).toBe(200);
    expect(r.rawPayload.equals(original)).toBe(true);
    if (r.headers['content-length'] !== undefined) expect(Number(r.headers['content-length'])).toBe(original.length);
    expect(graph.calls.find((c) => c.path === '/download/777000006')!.headers['accept-encoding']).toBe('identity');
  });

  it('answers a HEAD from the lookup alone: nothing is downloaded', async () => {
    const { msg, body } = cloudMessage('5531900000107', 'video', { video: { id: '777000007', mime_type: 'video/mp4' } });
    await postCloud(t.app, channel.id, body);
    const id = await stored(channel.id, msg.id);
    graph.respond((c) => (c.path === '/v21.0/777000007' ? { status: 200, body: { url: `${graph.url}/download/777000007`, mime_type: 'video/mp4', file_size: 52_428_800, id: '777000007' } } : undefined));
    const r = await t.app.inject({ method: 'HEAD', url: `/api/v1/messages/${id}/media`, headers: { authorization: `Bearer ${t.key}` } });
    expect(r.statusCode).toBe(200);
    expect(r.headers['content-type']).toBe('video/mp4');
    expect(r.headers['content-length']).toBe('52428800');
    expect(r.body).toBe('');
    expect(graph.calls.some((c) => c.path === '/v21.0/777000007')).toBe(true);
    expect(graph.calls.some((c) => c.path === '/download/777000007')).toBe(false);
  });

  it('answers 404 when Meta no longer has the media', async () => {
    const { msg, body } = cloudMessage('5531900000102', 'image', { image: { id: '777000002', mime_type: 'image/jpeg' } });
    await postCloud(t.app, channel.id, body);
    const id = await stored(channel.id, msg.id);
    graph.respond((c) => (c.path === '/v21.0/777000002' ? graphError(400, 100, 'Unsupported get request. Object with ID does not exist') : undefined));
    const r = await media(id);
    expect(r.statusCode).toBe(404);
    expect(r.json().detail).toContain('no longer has this media');
  });

  it('answers 404 for a message without media, and for another project’s message', async () => {
    const { msg, body } = cloudText('5531900000103', 'só texto');
    await postCloud(t.app, channel.id, body);
    const id = await stored(channel.id, msg.id);
    expect((await media(id)).statusCode).toBe(404);

    const name = uniqueName('u');
    const reg = await t.app.inject({ method: 'POST', url: '/api/v1/auth/register', payload: { name, email: `${name}@example.com`, password: 'correct horse battery staple' } });
    const { msg: img, body: imgBody } = cloudMessage('5531900000104', 'image', { image: { id: '777000004', mime_type: 'image/jpeg' } });
    await postCloud(t.app, channel.id, imgBody);
    const imgId = await stored(channel.id, img.id);
    const other = await media(imgId, reg.json().api_key.key);
    expect(other.statusCode).toBe(404);
    expect(graph.calls.some((c) => c.path.includes('777000004'))).toBe(false);
  });

  it('redirects to a WAHA message’s stored URL that is not one of WAHA’s files', async () => {
    const waha = await t.createChannel();
    const body = wahaText('5531900000105', 'foto');
    body.payload.hasMedia = true;
    body.payload.media = { url: 'https://media.example.test/loja/foto.jpeg', mimetype: 'image/jpeg' };
    body.payload._data.Info.Type = 'media';
    body.payload._data.Info.MediaType = 'image';
    body.payload._data.Message = { imageMessage: { caption: 'foto', mimetype: 'image/jpeg' } };
    expect((await t.post(waha, body)).status).toBe(200);
    const id = await stored(waha.id, body.payload.id);
    const r = await media(id);
    expect(r.statusCode).toBe(302);
    expect(r.headers.location).toBe('https://media.example.test/loja/foto.jpeg');
  });

  it('fetches nothing from a loopback or private address by default: no Graph lookup, no download, a 422 naming the setting', async () => {
    const { msg, body } = cloudMessage('5531900000109', 'image', { image: { id: '777000009', mime_type: 'image/jpeg' } });
    await postCloud(t.app, channel.id, body);
    const id = await stored(channel.id, msg.id);
    // The same database and channel, served by an app with the default setting.
    const strict = await buildApp({ config: loadConfig({ LOG_LEVEL: 'silent', SECRET_KEY }), db: t.db, broker: t.broker, logger: silentLogger });
    onCleanup(() => strict.close());
    const before = graph.calls.length;
    const r = await strict.inject({ method: 'GET', url: `/api/v1/messages/${id}/media`, headers: { authorization: `Bearer ${t.key}` } });
    expect(r.statusCode).toBe(422);
    expect(r.json().detail).toMatch(/Graph API address .* private address.*CLOUD_API_ALLOW_PRIVATE_URLS/);
    expect(graph.calls.length).toBe(before);
  });
});
