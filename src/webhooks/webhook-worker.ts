// The outbound-webhook part of the worker role: fan-out consumer, dispatchers, scheduler.
// main.ts starts it; tests start it (or parts of it) with their own options.
import type { Broker } from '../broker/broker.ts';
import { startConsumer } from '../broker/consumer-runner.ts';
import { Queues, allQueues } from '../broker/topology.ts';
import type { Config } from '../config.ts';
import type { Database } from '../db/database.ts';
import { msUntil, type Component } from '../deadline.ts';
import type { Logger } from '../observability/logger.ts';
import type { CircuitBreakerOptions } from './circuit-breaker.ts';
import { makeDispatcher } from './dispatcher.ts';
import { FANOUT_CONSUMER, FANOUT_QUEUE, startFanout } from './fanout.ts';
import { startScheduler } from './scheduler.ts';
import type { ResolveHost } from './ssrf-guard.ts';

export type WebhookWorkerOptions = {
  db: Database;
  broker: Broker;
  config: Config;
  secretKey: string;
  logger: Logger;
  /** Which parts to run (all by default). */
  parts?: { fanout?: boolean; dispatcher?: boolean; scheduler?: boolean };
  fanoutConcurrency?: number;
  schedulerPollMs?: number;
  enqueueGraceMs?: number;
  /** A confirmed enqueue mark is taken as lost after this long whatever the queues hold (scheduler.ts). */
  maxQueuedMs?: number;
  disableCheckEveryMs?: number;
  leaseMarginMs?: number;
  /** At shutdown, how long attempts under way may go on before they are cut off (SHUTDOWN_TIMEOUT_MS). */
  stopAttemptsMs?: number;
  circuit?: Omit<CircuitBreakerOptions, 'onChange'>;
  resolve?: ResolveHost;
};

export async function startWebhookWorker(opts: WebhookWorkerOptions): Promise<Component[]> {
  const { db, broker, config, logger } = opts;
  const parts = { fanout: true, dispatcher: true, scheduler: true, ...opts.parts };
  const components: Component[] = [];
  // main.ts declares every queue at start-up; declaring ours again (idempotent) lets the worker be
  // started on its own, as tests and benchmarks do.
  const ours: string[] = [FANOUT_QUEUE, Queues.webhooksOutbound, Queues.webhooksDue];
  await broker.declareQueues(allQueues().filter((q) => ours.includes(q.name)));

  try {
    const scheduler = parts.scheduler
      ? startScheduler({
          db,
          broker,
          logger,
          defaultMaxAttempts: config.webhookRetryScheduleMs.length + 1,
          disableAfterDays: config.webhookDisableAfterDays,
          ...(opts.schedulerPollMs !== undefined && { pollMs: opts.schedulerPollMs }),
          ...(opts.enqueueGraceMs !== undefined && { enqueueGraceMs: opts.enqueueGraceMs }),
          ...(opts.maxQueuedMs !== undefined && { maxQueuedMs: opts.maxQueuedMs }),
          ...(opts.disableCheckEveryMs !== undefined && { disableCheckEveryMs: opts.disableCheckEveryMs }),
        })
      : undefined;
    if (scheduler) components.push(scheduler);

    if (parts.dispatcher) {
      const dispatcher = makeDispatcher({
        db,
        broker,
        config,
        secretKey: opts.secretKey,
        logger,
        ...(opts.resolve && { resolve: opts.resolve }),
        ...(opts.leaseMarginMs !== undefined && { leaseMarginMs: opts.leaseMarginMs }),
        ...(opts.stopAttemptsMs !== undefined && { stopAttemptsMs: opts.stopAttemptsMs }),
        ...(opts.circuit && { circuit: opts.circuit }),
        ...(scheduler && { onDue: (at: number) => scheduler.wakeAt(at) }),
      });
      // Twice WEBHOOK_CONCURRENCY new deliveries at once, and WEBHOOK_CONCURRENCY due again on their
      // own queue — three times the dispatcher's cap on requests in flight, so admitted deliveries
      // are waiting whenever a request slot frees. Both queues share the dispatcher (its request
      // slots and per-endpoint limits), and so one line for request slots.
      const consumers = [
        await startConsumer(broker, { name: 'webhook-dispatcher', queue: Queues.webhooksOutbound, concurrency: 2 * config.webhookConcurrency, handle: dispatcher.handle }, logger),
        await startConsumer(broker, { name: 'webhook-dispatcher-due', queue: Queues.webhooksDue, concurrency: config.webhookConcurrency, handle: dispatcher.handle }, logger),
      ];
      components.push({
        name: 'webhook-dispatcher',
        // One deadline for both waits: the consumers' handlers (waiting for a request slot, a rate)
        // and the attempts under way, which the dispatcher then cuts off and gives back.
        async stop(deadline) {
          await Promise.all(consumers.map((c) => c.stop(msUntil(deadline))));
          await dispatcher.stop(deadline);
        },
      });
    }

    if (parts.fanout) {
      const fanout = await startFanout({ db, broker, logger });
      const consumer = await startConsumer(
        broker,
        { name: FANOUT_CONSUMER, queue: FANOUT_QUEUE, concurrency: opts.fanoutConcurrency ?? (db.kind === 'pglite' ? 16 : 64), handle: fanout.handle },
        logger,
      );
      components.push({
        name: FANOUT_CONSUMER,
        async stop(deadline) {
          await consumer.stop(msUntil(deadline));
          await fanout.stop();
        },
      });
    }
  } catch (err) {
    // A part that could not start must not leave the others running behind a failed start.
    for (const c of components.reverse()) await c.stop().catch(() => {});
    throw err;
  }
  return components;
}
