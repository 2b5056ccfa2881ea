// THE EXTENSION POINT of the generated isolation tests (isolation.test.ts). The tests walk every
// /api/v1 route of the app; this file tells them how to point a route at something tenant A owns.
//
// Adding a resource route? Add, when the defaults do not fit:
// - `resources['/api/v1/<things>/:id']`: creates an A-owned <thing> and returns the path params.
//   It covers every route under that prefix (longest prefix wins), e.g. /contacts/:id/messages.
//   Without one, the route gets a random uuid: B must still get 404 there, but the test is weaker.
// - `bodies['PATCH /api/v1/<things>/:id']`: a valid body, when the generated one (minimal values
//   from the JSON schema) fails validation — the test then reports "add a body fixture".
// - `seeds`: A-owned rows that your list routes could leak; return their ids. Every GET without
//   path params is called with B's key and must not contain any A id anywhere in its answer.
import type { Broker } from '../../src/broker/broker.ts';
import { PROJECT_HEADER } from '../../src/broker/broker.ts';
import { insertDeadLetter } from '../../src/broker/dead-letters.sql.ts';
import type { Database } from '../../src/db/database.ts';
import { insertParseError } from '../../src/db/parse-errors.sql.ts';
import { withTransaction } from '../../src/db/transaction.ts';
import { insertDeliveries } from '../../src/db/webhook-deliveries.sql.ts';
import { insertSubscription } from '../../src/db/webhook-subscriptions.sql.ts';
import { newEvent } from '../../src/domain/events.ts';
import { uuidv7 } from '../../src/domain/ids.ts';
import { sealJson } from '../../src/domain/secret-box.ts';
import { buildWebhookBody, generateSecret } from '../../src/webhooks/signer.ts';
import { appendEvents } from '../../src/outbox/outbox.sql.ts';
import type { FastifyInstance } from 'fastify';
import type { Tenant } from './harness.ts';
import { seedChannel, seedContact, seedMessage, seedSession, at } from './seed-conversations.ts';

export type World = { app: FastifyInstance; db: Database; broker: Broker; a: Tenant; b: Tenant };

type Params = Record<string, string>;

/** Memoised per world: one A-owned conversation (channel → contact → session → message). */
const conversations = new WeakMap<World, Promise<{ channelId: string; contactId: string; sessionId: string; messageId: string }>>();
export function conversationOfA(w: World) {
  let c = conversations.get(w);
  if (!c) {
    c = (async () => {
      const channelId = await seedChannel(w.db, w.a.projectId, 'a-main');
      const contactId = await seedContact(w.db, w.a.projectId, { name: 'A customer' });
      const sessionId = await seedSession(w.db, { projectId: w.a.projectId, contactId, channelId, startedAt: at(0) });
      const messageId = await seedMessage(w.db, { projectId: w.a.projectId, contactId, channelId, sessionId, timestamp: at(1) });
      return { channelId, contactId, sessionId, messageId };
    })();
    conversations.set(w, c);
  }
  return c;
}

/** A dead letter of A's project (what a failed consumer leaves). */
export async function deadLetterOfA(w: World): Promise<string> {
  return insertDeadLetter(w.db, {
    queue: 'webhooks.outbound',
    messageId: uuidv7(),
    routingKey: 'webhooks.outbound',
    headers: { [PROJECT_HEADER]: w.a.projectId },
    body: Buffer.from(JSON.stringify({ delivery_id: uuidv7() })),
    error: 'Error: receiver said 500',
    attempts: 3,
  });
}

/**
 * Memoised per world: one A-owned webhook subscription with one dead delivery (one attempt made),
 * stored directly — no worker runs here, so nothing is ever sent.
 */
const webhooks = new WeakMap<World, Promise<{ subscriptionId: string; deliveryId: string; eventId: string }>>();
export function webhookOfA(w: World) {
  let h = webhooks.get(w);
  if (!h) {
    h = withTransaction(
      w.db,
      async (tx) => {
        const projectId = w.a.projectId;
        const sub = await insertSubscription(tx, {
          id: uuidv7(), projectId, name: 'A hook', url: 'https://hooks.example.com/a', events: ['*'], headers: {},
          // Sealed with the key startApp gives the app.
          secret: sealJson('k'.repeat(64), generateSecret()), maxAttempts: null, timeoutSeconds: null, rateLimitPerSecond: null, active: true,
        });
        const e = newEvent('contact.deleted', { projectId, aggregateId: uuidv7(), data: { contact_id: uuidv7(), phone: null, deleted_at: new Date().toISOString() } });
        const [d] = await insertDeliveries(tx, projectId, [{ id: uuidv7(), subscriptionId: sub.id, eventId: e.id, eventType: e.type, body: buildWebhookBody(e) }]);
        await tx.query(
          `UPDATE webhook_deliveries SET status = 'dead', attempts = 1, next_attempt_at = NULL, last_status_code = 500, last_error = 'HTTP 500' WHERE id = $1`,
          [d.id],
        );
        await tx.query(
          `INSERT INTO webhook_attempts (delivery_id, n, project_id, at, status_code, duration_ms, error_class, error) VALUES ($1, 1, $2, now(), 500, 12, 'server_error', 'HTTP 500')`,
          [d.id, projectId],
        );
        return { subscriptionId: sub.id, deliveryId: d.id, eventId: e.id };
      },
      { projectId: w.a.projectId },
    );
    webhooks.set(w, h);
  }
  return h;
}

/** Path params of an A-owned resource, by route prefix. */
export const resources: Record<string, (w: World) => Promise<Params>> = {
  '/api/v1/projects/:id': async (w) => ({ id: w.a.projectId }),
  '/api/v1/projects/:id/members/:user_id': async (w) => ({ id: w.a.projectId, user_id: w.a.userId }),
  '/api/v1/api-keys/:id': async (w) => ({ id: w.a.keyIds.viewer }),
  '/api/v1/admin/dead-letters/:id': async (w) => ({ id: await deadLetterOfA(w) }),
  '/api/v1/channels/:id': async (w) => ({ id: (await conversationOfA(w)).channelId }),
  '/api/v1/contacts/:id': async (w) => ({ id: (await conversationOfA(w)).contactId }),
  '/api/v1/sessions/:id': async (w) => ({ id: (await conversationOfA(w)).sessionId }),
  '/api/v1/messages/:id': async (w) => ({ id: (await conversationOfA(w)).messageId }),
  '/api/v1/pipelines/:id': async (w) => ({ id: w.a.pipelineId }),
  '/api/v1/webhook-subscriptions/:id': async (w) => ({ id: (await webhookOfA(w)).subscriptionId }),
  '/api/v1/webhook-deliveries/:id': async (w) => ({ id: (await webhookOfA(w)).deliveryId }),
};

/** Valid bodies for routes whose generated body would not validate (or would prove little). */
export const bodies: Record<string, (w: World) => unknown> = {
  // B tries to make itself admin of A's project.
  'POST /api/v1/projects/:id/members': (w) => ({ email: w.b.email, role: 'admin' }),
  'PATCH /api/v1/projects/:id': () => ({ name: 'taken over' }),
};

/** A-owned rows that lists could leak. Each returns the ids it created. */
export const seeds: Array<(w: World) => Promise<string[]>> = [
  async (w) => [w.a.projectId, w.a.userId, w.a.pipelineId, ...Object.values(w.a.keyIds)],
  async (w) => [await deadLetterOfA(w)],
  async (w) => {
    const id = uuidv7();
    await insertParseError(w.db, {
      id,
      projectId: w.a.projectId,
      channelId: null,
      provider: 'waha',
      eventType: 'message',
      reason: 'not JSON',
      body: Buffer.from('garbage'),
      headers: {},
    });
    return [id];
  },
  async (w) => {
    // A published event in A's log.
    const e = newEvent('contact.deleted', { projectId: w.a.projectId, aggregateId: uuidv7(), data: { contact_id: uuidv7(), phone: null, deleted_at: new Date().toISOString() } });
    await appendEvents(w.db, [e]);
    await w.db.query('UPDATE outbox SET published_at = now() WHERE id = $1', [e.id]);
    return [e.id, e.aggregate_id];
  },
  async (w) => Object.values(await conversationOfA(w)),
  async (w) => Object.values(await webhookOfA(w)),
];
