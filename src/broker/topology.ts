// Every queue the application uses, with its bindings on `domain.events`. Declared at start-up by
// every role, idempotently, on either broker.
import type { QueueSpec } from './broker.ts';

export const Queues = {
  /** Raw provider webhooks accepted by the ingress. */
  inboundRaw: 'inbound.raw',
  /** Webhook delivery ids ready to be sent: new deliveries, and retries asked for through the API. */
  webhooksOutbound: 'webhooks.outbound',
  /** Webhook delivery ids that came due again (retries, postponements), re-enqueued by the
   * scheduler. The same dispatcher serves both queues; a long backlog coming due at once (a stuck
   * endpoint's) waits here rather than in front of new deliveries — at most WEBHOOK_CONCURRENCY of
   * it are taken at once, and those share the line for request slots. */
  webhooksDue: 'webhooks.due',
  /** Ids of queued outbound messages (replies) for the sender; the messages row is the truth. */
  messagesOutbound: 'messages.outbound',
  /** contact.created → the contact enters the project's default pipeline (when the project wants it). */
  pipelineEntry: 'consumer.pipeline-entry',
  /** session.ended → the contact's conversation totals. */
  contactTotals: 'consumer.contact-totals',
} as const;

/** Domain consumers: `consumer.<name>` bound to the event types they handle. */
export const consumerQueues: QueueSpec[] = [
  // Every event may match some project's webhook subscription (`*`), so the fan-out sees them all.
  { name: 'consumer.webhook-fanout', bindings: ['#'] },
  { name: Queues.pipelineEntry, bindings: ['contact.created'] },
  { name: Queues.contactTotals, bindings: ['session.ended'] },
];

export function allQueues(): QueueSpec[] {
  return [{ name: Queues.inboundRaw }, { name: Queues.webhooksOutbound }, { name: Queues.webhooksDue }, { name: Queues.messagesOutbound }, ...consumerQueues];
}
