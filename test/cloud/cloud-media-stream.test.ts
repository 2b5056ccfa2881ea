// The media host's deadline (MEDIA_DOWNLOAD_TIMEOUT_MS; 300 ms here) bounds the wait for its answer
// and any silence while the body comes, not the whole transfer: a big file that keeps coming is
// passed on to its end however long it takes. The lookup is the fake Graph API's; the media host
// is a server of this file's whose answers the test writes piece by piece.
import { once } from 'node:events';
import { createServer, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { downloadCloudMedia } from '../../src/channels/cloud-media.ts';
import { MEDIA_DOWNLOAD_TIMEOUT_MS } from '../../src/channels/media-download.ts';
import { makeGuardedDispatcher } from '../../src/webhooks/ssrf-guard.ts';
import { onCleanup, waitFor } from '../support/env.ts';
import { ACCESS_TOKEN, PHONE_NUMBER_ID, startFakeGraph } from './harness.ts';

const DEADLINE_MS = 300;

// The media host: each download's response waits here for the test to write it.
const waiting: ServerResponse[] = [];
const host = createServer((req, res) => {
  req.resume();
  waiting.push(res);
});
await new Promise<void>((resolve) => host.listen(0, '127.0.0.1', resolve));
onCleanup(async () => {
  host.closeAllConnections();
  await new Promise<void>((resolve) => host.close(() => resolve()));
});
const hostUrl = `http://127.0.0.1:${(host.address() as AddressInfo).port}`;
const nextDownload = () => waitFor(() => waiting.shift(), 'the download request');

const graph = await startFakeGraph();
graph.respond((c) => {
  const id = /^\/v21\.0\/(\d+)$/.exec(c.path)?.[1];
  return id ? { status: 200, body: { url: `${hostUrl}/file/${id}`, mime_type: 'application/pdf', id } } : undefined;
});
// As the route connects: through the address guard (loopback allowed), with the production timeouts.
const dispatcher = makeGuardedDispatcher({ allowPrivate: true, timeoutMs: MEDIA_DOWNLOAD_TIMEOUT_MS });
onCleanup(() => dispatcher.close());
const conn = { baseUrl: graph.url, version: 'v21.0', phoneNumberId: PHONE_NUMBER_ID, accessToken: ACCESS_TOKEN, dispatcher };

const download = async (mediaId: string) => {
  const media = await downloadCloudMedia(conn, mediaId, { mimetype: null, filename: null }, { timeoutMs: DEADLINE_MS });
  if (media.kind !== 'stream') throw new Error(`expected a stream, got ${media.kind}`);
  return media.body;
};

describe('downloading Cloud media: the deadline', () => {
  it('passes on a body that takes longer than the deadline in all but never goes quiet that long', async () => {
    const body = download('888000001');
    const res = await nextDownload();
    res.writeHead(200, { 'content-type': 'application/pdf' });
    const piece = (i: number) => Buffer.alloc(4096, i % 251);
    const sent: Buffer[] = [piece(0)];
    res.write(sent[0]);
    const started = Date.now();
    const received: Buffer[] = [];
    // One more piece each time the reader gets one, until three deadlines have passed.
    for await (const chunk of await body) {
      received.push(chunk as Buffer);
      if (res.writableEnded) continue;
      if (Date.now() - started > 3 * DEADLINE_MS) res.end();
      else {
        sent.push(piece(sent.length));
        res.write(sent.at(-1));
      }
    }
    expect(Date.now() - started).toBeGreaterThan(3 * DEADLINE_MS);
    expect(Buffer.concat(received).equals(Buffer.concat(sent))).toBe(true);
  });

  it('fails the body when the host goes quiet for the deadline mid-file, and lets go of its connection', async () => {
    const pending = download('888000002');
    const res = await nextDownload();
    res.writeHead(200, { 'content-type': 'application/pdf', 'content-length': '8192' });
    res.write(Buffer.alloc(4096, 1));
    const body: Readable = await pending;
    const closed = once(res, 'close');
    let got = 0;
    body.on('data', (c: Buffer) => (got += c.length));
    const [err] = (await once(body, 'error')) as [Error];
    expect(err.message).toBe(`the media host sent nothing for ${DEADLINE_MS} ms`);
    expect(got).toBe(4096);
    await closed;
  });

  it('gives up with the usual error when the host sends no answer within the deadline', async () => {
    const pending = downloadCloudMedia(conn, '888000003', { mimetype: null, filename: null }, { timeoutMs: DEADLINE_MS });
    const res = await nextDownload();
    const closed = once(res, 'close');
    await expect(pending).rejects.toMatchObject({ code: 'unavailable', message: expect.stringMatching(/^the media could not be downloaded: /) });
    await closed;
  });

  it('ends the stream when our own client stops reading for the deadline, and lets go of the host', async () => {
    const pending = download('888000004');
    const res = await nextDownload();
    res.writeHead(200, { 'content-type': 'application/pdf' });
    // More than the stream and the sockets buffer, so that the host is held back by a reader who
    // no longer reads.
    const closed = once(res, 'close');
    const feed = () => {
      while (!res.destroyed && res.write(Buffer.alloc(64 * 1024, 7)));
    };
    res.on('drain', feed);
    feed();
    const body: Readable = await pending;
    const chunk = await new Promise<Buffer>((resolve) => body.once('readable', () => resolve(body.read() as Buffer)));
    expect(chunk.length).toBeGreaterThan(0);
    // and never reads again
    const [err] = (await once(body, 'error')) as [Error];
    expect(err.message).toBe(`the client read nothing for ${DEADLINE_MS} ms`);
    await closed;
  });
});

