// Every queue the application uses, with its bindings on `domain.events`. Declared at start-up by
// every role, idempotently, on either broker.
import type { QueueSpec } from './broker.ts';

export const Queues = {
  /** Raw provider webhooks accepted by the ingress. */
  inboundRaw: 'inbound.raw',
  /** Webhook delivery ids ready to be sent. */
  webhooksOutbound: 'webhooks.outbound',
} as const;

/** Domain consumers: `consumer.<name>` bound to the event types they handle. */
export const consumerQueues: QueueSpec[] = [];

export function allQueues(): QueueSpec[] {
  return [{ name: Queues.inboundRaw }, { name: Queues.webhooksOutbound }, ...consumerQueues];
}
