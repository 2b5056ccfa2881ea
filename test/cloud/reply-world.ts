// What the Cloud reply tests share: the conversations world (its sweeper's clock held at T0, so
// these real-time conversations never time out), a fake Graph API, a Cloud channel pointed at it,
// and reads of the replies.
import { waitFor } from '../support/env.ts';
import { fakeClock, rows, startWorld } from '../conversations/harness.ts';
import { createCloudChannel, startFakeGraph, type GraphCall } from './harness.ts';

export async function startCloudReplyWorld() {
  const world = await startWorld({ clock: fakeClock() });
  const graph = await startFakeGraph();
  const channel = await createCloudChannel(world.tenant.api, { api_base_url: graph.url });
  const message = async (id: string) => (await rows(world.db, 'SELECT * FROM messages WHERE id = $1', [id]))[0];
  return {
    world,
    db: world.db,
    tenant: world.tenant,
    graph,
    channel,
    message,
    /** The Graph API's send calls to this phone (digits). */
    sendsTo: (phone: string): GraphCall[] => graph.sends().filter((c) => c.body?.to === phone),
    /** The reply once it has left `queued`. */
    settled: (id: string) =>
      waitFor(async () => {
        const m = await message(id);
        return m.status !== 'queued' ? m : undefined;
      }, `message ${id} to leave queued`, 30_000),
  };
}
