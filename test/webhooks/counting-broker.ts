// A broker that forwards everything and remembers the ids of the messages sent to each queue
// (once the send resolved): for tests that count what the webhook scheduler put on a queue.
import type { Broker } from '../../src/broker/broker.ts';

export function countingBroker(inner: Broker): { broker: Broker; sent: (queue: string) => string[] } {
  const sent = new Map<string, string[]>();
  const broker: Broker = {
    kind: inner.kind,
    declareQueues: (specs) => inner.declareQueues(specs),
    publish: (key, msgs) => inner.publish(key, msgs),
    async send(queue, msgs, o) {
      await inner.send(queue, msgs, o);
      sent.set(queue, [...(sent.get(queue) ?? []), ...msgs.map((m) => m.messageId)]);
    },
    consume: (queue, handler, o) => inner.consume(queue, handler, o),
    keepInDeadLetters: (queue, keep) => inner.keepInDeadLetters(queue, keep),
    stats: (queues) => inner.stats(queues),
    check: () => inner.check(),
    close: () => inner.close(),
  };
  return { broker, sent: (queue) => sent.get(queue) ?? [] };
}
