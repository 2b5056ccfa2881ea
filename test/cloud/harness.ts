// What the Cloud API tests share: Cloud channels created through the API, webhooks signed the way
// Meta signs them and posted through the real ingress, Cloud-shaped bodies, and a fake Graph API
// (a real HTTP server on 127.0.0.1 whose answers the test controls).
import { createHmac } from 'node:crypto';
import { createServer, type IncomingHttpHeaders, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import type { FastifyInstance } from 'fastify';
import { onCleanup, uniqueName } from '../support/env.ts';

export const APP_SECRET = 'cloud-test-app-secret';
export const VERIFY_TOKEN = 'cloud-test-verify-token';
export const ACCESS_TOKEN = 'EAAG-cloud-test-access-token';
export const PHONE_NUMBER_ID = '200000000000001';

type Api = (method: 'GET' | 'POST' | 'PATCH' | 'DELETE', url: string, body?: unknown, key?: string) => Promise<{ status: number; json: any }>;

export type CloudChannel = { id: string; webhook_url: string; [k: string]: unknown };

export async function createCloudChannel(api: Api, config: Record<string, unknown> = {}): Promise<CloudChannel> {
  const r = await api('POST', '/channels', {
    name: uniqueName('cloud'),
    type: 'whatsapp_cloud',
    config: { phone_number_id: PHONE_NUMBER_ID, access_token: ACCESS_TOKEN, app_secret: APP_SECRET, verify_token: VERIFY_TOKEN, ...config },
  });
  if (r.status !== 201) throw new Error(`creating a Cloud channel answered ${r.status}: ${JSON.stringify(r.json)}`);
  return r.json;
}

export const sign = (body: Buffer | string, secret = APP_SECRET) => `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;

/** POSTs a body to the Cloud ingress, signed with `secret` (null: no signature header at all). */
export async function postCloud(app: FastifyInstance, channelId: string, body: unknown, secret: string | null = APP_SECRET): Promise<{ status: number; json: any }> {
  const payload = Buffer.from(typeof body === 'string' ? body : JSON.stringify(body));
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (secret !== null) headers['x-hub-signature-256'] = sign(payload, secret);
  const r = await app.inject({ method: 'POST', url: `/api/v1/webhooks/whatsapp/${channelId}`, headers, payload });
  let json: any;
  try {
    json = r.body ? JSON.parse(r.body) : undefined;
  } catch {
    json = r.body;
  }
  return { status: r.statusCode, json };
}

/** A fresh Cloud message id (the shape Meta uses: `wamid.` + base64). */
export const wamid = (tag = 'm') => `wamid.${Buffer.from(uniqueName(tag)).toString('base64').replace(/[^A-Za-z0-9]/g, '')}`;

/** One Cloud webhook body with a single change carrying these messages/statuses. */
export function cloudBody(v: { messages?: unknown[]; statuses?: unknown[]; contacts?: unknown[]; phoneNumberId?: string }): any {
  const value: Record<string, unknown> = {
    messaging_product: 'whatsapp',
    metadata: { display_phone_number: '5511900000000', phone_number_id: v.phoneNumberId ?? PHONE_NUMBER_ID },
  };
  if (v.contacts) value.contacts = v.contacts;
  if (v.messages) value.messages = v.messages;
  if (v.statuses) value.statuses = v.statuses;
  return { object: 'whatsapp_business_account', entry: [{ id: '100000000000001', changes: [{ field: 'messages', value }] }] };
}

/** A Cloud message from `phone` (digits) of any type; `content` is the type's object. */
export function cloudMessage(phone: string, type: string, content: Record<string, unknown>, o: { id?: string; ts?: number; name?: string } = {}): { msg: any; body: any } {
  const msg = { from: phone, id: o.id ?? wamid(), timestamp: String(o.ts ?? 1_764_460_800), type, ...content };
  return { msg, body: cloudBody({ contacts: [{ profile: { name: o.name ?? 'Cliente Cloud' }, wa_id: phone }], messages: [msg] }) };
}

export const cloudText = (phone: string, text: string, o: { id?: string; ts?: number; name?: string } = {}) => cloudMessage(phone, 'text', { text: { body: text } }, o);

export function cloudStatus(id: string, status: string, phone: string, o: { ts?: number; errors?: unknown[] } = {}): any {
  return { id, status, timestamp: String(o.ts ?? 1_764_460_900), recipient_id: phone, ...(o.errors ? { errors: o.errors } : {}) };
}

// ---- fake Graph API -------------------------------------------------------------------------

export type GraphCall = { method: string; path: string; headers: IncomingHttpHeaders; body: any };
export type GraphReply = { status: number; body?: unknown; headers?: Record<string, string>; raw?: Buffer };

export type FakeGraph = {
  url: string;
  calls: GraphCall[];
  /** Replaces the answer to every call; return undefined for the default answer. */
  respond(fn: (call: GraphCall, n: number) => GraphReply | undefined): void;
  /** Message sends only. */
  sends(): GraphCall[];
};

/** What Meta answers a send: the recipient, and the new message's id. */
export function sendAccepted(to: string, id = wamid('out')): GraphReply {
  return { status: 200, body: { messaging_product: 'whatsapp', contacts: [{ input: to, wa_id: to }], messages: [{ id }] } };
}

export async function startFakeGraph(): Promise<FakeGraph> {
  const calls: GraphCall[] = [];
  let responder: Parameters<FakeGraph['respond']>[0] = () => undefined;
  let base = '';
  const defaultReply = (call: GraphCall): GraphReply => {
    if (call.method === 'POST' && /\/messages$/.test(call.path)) return sendAccepted(String(call.body?.to ?? ''));
    // GET /{version}/{media_id}: Meta's media lookup, pointing at a download on this server.
    const media = /^\/v[\d.]+\/(\d+)$/.exec(call.path);
    if (call.method === 'GET' && media) {
      return { status: 200, body: { messaging_product: 'whatsapp', url: `${base}/download/${media[1]}`, mime_type: 'image/jpeg', sha256: 'x', file_size: 4, id: media[1] } };
    }
    if (call.method === 'GET' && call.path.startsWith('/download/')) return { status: 200, raw: Buffer.from('JPEG'), headers: { 'content-type': 'image/jpeg' } };
    return { status: 404, body: { error: { message: 'Unknown path (fake)', code: 100 } } };
  };
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const text = Buffer.concat(chunks).toString('utf8');
      let body: unknown;
      try {
        body = text ? JSON.parse(text) : undefined;
      } catch {
        body = text;
      }
      const call: GraphCall = { method: req.method ?? '', path: req.url ?? '', headers: req.headers, body };
      calls.push(call);
      const r = responder(call, calls.length) ?? defaultReply(call);
      res.writeHead(r.status, { 'content-type': 'application/json', ...r.headers });
      res.end(r.raw ?? (r.body === undefined ? '' : JSON.stringify(r.body)));
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  onCleanup(() => new Promise<void>((resolve) => server.close(() => resolve())));
  server.unref();
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
  return {
    url: base,
    calls,
    respond: (fn) => (responder = fn),
    sends: () => calls.filter((c) => c.method === 'POST' && c.path.endsWith('/messages')),
  };
}

/** Meta's error answer: `{error: {message, type, code, error_data: {details}}}`. */
export function graphError(status: number, code: number, message: string, details?: string): GraphReply {
  return {
    status,
    body: { error: { message, type: 'OAuthException', code, ...(details ? { error_data: { messaging_product: 'whatsapp', details } } : {}), fbtrace_id: 'AbCdEf' } },
  };
}
