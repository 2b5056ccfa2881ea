// Messages on `webhooks.outbound` (new deliveries) and `webhooks.due` (those the scheduler finds
// due again): one per delivery to send, carrying only ids — the row is the truth, so a duplicate
// or stale message is harmless (its claim finds nothing to do).
import { PROJECT_HEADER, type Broker } from '../broker/broker.ts';
import { Queues } from '../broker/topology.ts';

/** Lets the dispatcher apply the subscription's circuit and limits before touching the row. */
export const SUBSCRIPTION_HEADER = 'x-webhook-subscription';

/**
 * A delivery a person asked for now (a manual retry, a test event): it goes past an open circuit,
 * which would otherwise hold it for the rest of its cool-down (up to 10 minutes). The row keeps
 * the pass too (`manual`, migration 039) until its attempt is recorded, so the message the
 * scheduler sends instead — the broker refused this one, or a cap or the rate limit put the
 * delivery off — carries it again; the dispatcher goes by the row once it has claimed it.
 */
export const MANUAL_HEADER = 'x-webhook-manual';

export type OutboundItem = { id: string; subscriptionId: string; projectId: string; manual?: boolean };

export async function enqueueDeliveries(broker: Broker, items: readonly OutboundItem[], queue: string = Queues.webhooksOutbound): Promise<void> {
  for (let i = 0; i < items.length; i += 500) {
    await broker.send(
      queue,
      items.slice(i, i + 500).map((d) => ({
        messageId: d.id,
        body: Buffer.from(JSON.stringify({ delivery_id: d.id })),
        headers: { [SUBSCRIPTION_HEADER]: d.subscriptionId, [PROJECT_HEADER]: d.projectId, ...(d.manual && { [MANUAL_HEADER]: '1' }) },
      })),
    );
  }
}
