// Tenant isolation of the webhook API on real resources. Project A has a subscription whose one
// delivery the real worker tried and gave up on (dead, one attempt logged). Project B's admin key
// then tries every webhook-subscription and webhook-delivery route on A's subscription and
// delivery: each answers 404, as for an id that does not exist, and nothing of A changes — no
// edit, no pause, no rotated secret, no retried or recovered delivery, no test delivery, no
// delete. B's lists show B's rows and never A's.
import { Webhook } from 'standardwebhooks';
import { beforeAll, describe, expect, it } from 'vitest';
import { routeTable } from '../../src/http/auth.ts';
import { generateSecret } from '../../src/webhooks/signer.ts';
import { waitFor } from '../support/env.ts';
import { startReceiver, type Receiver } from './receiver.ts';
import { api, emit, makeTenant, startWorld, subscribe, waitForDeliveries, type DeliveryRow, type TestTenant, type World } from './webhook-harness.ts';

let w: World;
let a: TestTenant;
let b: TestTenant;
let aReceiver: Receiver;
let bReceiver: Receiver;
let aSub: { id: string; secret: string };
let aDelivery: DeliveryRow;
let bSub: { id: string };
let bDelivery: DeliveryRow;

beforeAll(async () => {
  w = await startWorld();
  a = await makeTenant(w);
  b = await makeTenant(w);
  // A's endpoint fails and A allows one attempt: the delivery ends dead, the kind a retry or a
  // recover would send again.
  aReceiver = await startReceiver(() => 500);
  aSub = await subscribe(w, a, { url: aReceiver.url, name: 'A hook', headers: { 'x-tenant': 'a' }, max_attempts: 1 });
  await emit(w, a.projectId);
  [aDelivery] = await waitForDeliveries(w, aSub.id, 1, 'dead');
  // Health counters are written a moment after the attempt; wait for them so A's row is at rest.
  await waitFor(async () => (await w.db.query('SELECT failure_count FROM webhook_subscriptions WHERE id = $1', [aSub.id])).rows[0].failure_count == 1, "A's endpoint health written");
  // B has rows of its own, so an empty list from B could not pass for isolation.
  bReceiver = await startReceiver(() => 200);
  bSub = await subscribe(w, b, { url: bReceiver.url });
  await emit(w, b.projectId);
  [bDelivery] = await waitForDeliveries(w, bSub.id, 1, 'succeeded');
}, 60_000);

/** Everything of A's webhook setup, straight from the tables. */
async function stateOfA() {
  const rows = async (sql: string, params: unknown[]) => (await w.db.query(sql, params)).rows;
  return {
    subscriptions: await rows('SELECT * FROM webhook_subscriptions WHERE project_id = $1 ORDER BY id', [a.projectId]),
    deliveries: await rows('SELECT * FROM webhook_deliveries WHERE project_id = $1 ORDER BY id', [a.projectId]),
    attempts: await rows('SELECT * FROM webhook_attempts WHERE project_id = $1 ORDER BY delivery_id, n', [a.projectId]),
  };
}

type Attempt = { method: 'GET' | 'POST' | 'PATCH' | 'DELETE'; path: string; body?: () => unknown; what: string };

// `:sub` is A's subscription, `:delivery` A's delivery. The delete comes last, so every other
// route meets A's subscription still there.
const ATTEMPTS: Attempt[] = [
  { method: 'GET', path: '/webhook-subscriptions/:sub', what: 'read the subscription' },
  {
    method: 'PATCH', path: '/webhook-subscriptions/:sub', what: "point A's events at B's URL",
    body: () => ({ name: 'taken over', url: bReceiver.url, events: ['*'], headers: { 'x-tenant': 'b' }, max_attempts: 10, active: true }),
  },
  { method: 'POST', path: '/webhook-subscriptions/:sub/rotate-secret', what: 'rotate the secret to a generated one' },
  { method: 'POST', path: '/webhook-subscriptions/:sub/rotate-secret', body: () => ({ secret: generateSecret() }), what: 'rotate the secret to a chosen one' },
  { method: 'POST', path: '/webhook-subscriptions/:sub/test', what: 'send a test delivery' },
  { method: 'POST', path: '/webhook-subscriptions/:sub/pause', what: 'pause it' },
  { method: 'POST', path: '/webhook-subscriptions/:sub/resume', what: 'resume it' },
  { method: 'GET', path: '/webhook-subscriptions/:sub/deliveries', what: 'list its deliveries' },
  { method: 'GET', path: '/webhook-subscriptions/:sub/deliveries?status=dead', what: 'list its dead deliveries' },
  { method: 'POST', path: '/webhook-subscriptions/:sub/recover', body: () => ({ since: new Date(Date.now() - 86_400_000).toISOString() }), what: 'recover its dead deliveries' },
  { method: 'GET', path: '/webhook-deliveries/:delivery', what: 'read the delivery and its attempts' },
  { method: 'POST', path: '/webhook-deliveries/:delivery/retry', what: 'retry the delivery' },
  { method: 'GET', path: '/webhook-deliveries?subscription_id=:sub', what: "filter the delivery list by A's subscription" },
  { method: 'DELETE', path: '/webhook-subscriptions/:sub', what: 'delete the subscription' },
];

const fill = (path: string) => path.replace(':sub', aSub.id).replace(':delivery', aDelivery.id);
/** The route an attempt exercises, as the route table names it. */
const routeOf = (x: Attempt) => `${x.method} /api/v1${x.path.split('?')[0].replace(/:(sub|delivery)/, ':id')}`;

describe("B's key on A's real webhook subscription and delivery", () => {
  it('covers every webhook route that takes a subscription or delivery id', () => {
    const withId = routeTable(w.app)
      .map((r) => `${r.method} ${r.url}`)
      .filter((r) => /^\S+ \/api\/v1\/webhook-(subscriptions|deliveries)\/:id/.test(r));
    expect(withId.length).toBeGreaterThanOrEqual(11);
    const tried = new Set(ATTEMPTS.map(routeOf));
    expect(withId.filter((r) => !tried.has(r))).toEqual([]);
  });

  for (const x of ATTEMPTS) {
    it(`${x.method} ${x.path} (${x.what}): 404, and nothing of A changes`, async () => {
      const before = await stateOfA();
      const r = await api(w, b, x.method, fill(x.path), x.body?.());
      expect(r.status, r.body).toBe(404);
      expect(r.json.code).toBe('not_found');
      // Nothing of A in the answer either.
      for (const ofA of [aReceiver.url, 'A hook', aDelivery.event_id]) expect(r.body).not.toContain(ofA);
      expect(await stateOfA()).toEqual(before);
    });
  }

  it("left A's subscription, secret and delivery as they were; A's own key still works on them", async () => {
    const sub = await api(w, a, 'GET', `/webhook-subscriptions/${aSub.id}`);
    expect(sub.status).toBe(200);
    expect(sub.json).toMatchObject({
      id: aSub.id, name: 'A hook', url: aReceiver.url, events: ['contact.*'], headers: { 'x-tenant': 'a' }, active: true, paused: false, max_attempts: 1,
      previous_secret_expires_at: null,
    });
    const d = await api(w, a, 'GET', `/webhook-deliveries/${aDelivery.id}`);
    expect(d.status).toBe(200);
    expect(d.json).toMatchObject({ id: aDelivery.id, status: 'dead', attempt_count: 1, attempts: [{ n: 1, status_code: 500 }] });
    // Nothing reached A's endpoint after the one attempt, and nothing of A reached B's.
    expect(aReceiver.requests).toHaveLength(1);
    expect(bReceiver.requests.filter((q) => q.body.includes(aDelivery.event_id))).toEqual([]);

    // The control: A's own retry is accepted and goes out, signed with A's original secret alone —
    // so B's retry and rotations were refused, not merely slow.
    const retried = await api(w, a, 'POST', `/webhook-deliveries/${aDelivery.id}/retry`);
    expect(retried.status, retried.body).toBe(202);
    const again = await waitFor(() => aReceiver.requests[1], "A's retry to reach A's endpoint");
    expect(again.headers['webhook-id']).toBe(aDelivery.event_id);
    expect(String(again.headers['webhook-signature']).split(' ')).toHaveLength(1);
    expect(() => new Webhook(aSub.secret).verify(again.body, again.headers as Record<string, string>)).not.toThrow();
  });
});

describe("B's lists never show A's rows", () => {
  const aIds = () => [aSub.id, aDelivery.id, aDelivery.event_id, aReceiver.url];

  it.each([
    ['/webhook-subscriptions', () => bSub.id],
    ['/webhook-deliveries', () => bDelivery.id],
    ['/webhook-deliveries?status=dead', () => undefined],
    ['/webhook-deliveries?status=succeeded', () => bDelivery.id],
    [`/webhook-subscriptions/:b/deliveries`, () => bDelivery.id],
  ] as Array<[string, () => string | undefined]>)('GET %s', async (path, own) => {
    const url = path.replace(':b', bSub.id);
    const r = await api(w, b, 'GET', url);
    expect(r.status, r.body).toBe(200);
    expect(aIds().filter((id) => r.body.includes(id))).toEqual([]);
    const mine = own();
    if (mine) expect(r.json.data.map((x: { id: string }) => x.id)).toContain(mine);
  });

  it("(control: A's own lists do show A's rows, so the checks above can fail)", async () => {
    const subs = await api(w, a, 'GET', '/webhook-subscriptions');
    expect(subs.json.data.map((x: { id: string }) => x.id)).toContain(aSub.id);
    const deliveries = await api(w, a, 'GET', '/webhook-deliveries');
    expect(deliveries.json.data.map((x: { id: string }) => x.id)).toContain(aDelivery.id);
  });
});
