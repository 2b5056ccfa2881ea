// The worker-role parts of conversations, started together by main.ts: the inactivity sweeper,
// the reply sender and its scheduler, and the choreography consumers (pipeline entry, contact totals).
import type { Broker } from '../broker/broker.ts';
import { startSender } from '../channels/sender.consumer.ts';
import { providerDispatchers } from '../channels/provider-dispatchers.ts';
import type { Config } from '../config.ts';
import type { Database } from '../db/database.ts';
import type { Component } from '../deadline.ts';
import type { ChannelDirectory } from '../inbound/channel-directory.ts';
import type { Logger } from '../observability/logger.ts';
import { makeOutboundMessages } from '../services/outbound-messages.service.ts';
import { startOutboundScheduler } from '../timers/outbound-scheduler.ts';
import { startSessionSweeper, type SweeperOptions } from '../timers/session-sweeper.ts';
import { startContactTotalsConsumer } from './contact-totals.consumer.ts';
import { startPipelineEntryConsumer } from './pipeline-entry.consumer.ts';

export type ConversationWorkerDeps = {
  db: Database;
  broker: Broker;
  config: Config;
  logger: Logger;
  channels: ChannelDirectory;
  /** Test hooks for the sweeper: its clock and pass interval. */
  sweeper?: Pick<SweeperOptions, 'now' | 'intervalMs'>;
};

export async function startConversationWorker(deps: ConversationWorkerDeps): Promise<Component[]> {
  const { db, broker, logger } = deps;
  const components: Component[] = [];
  try {
    components.push(startSessionSweeper({ db, logger, ...deps.sweeper }));
    const scheduler = startOutboundScheduler({ db, logger, outbound: makeOutboundMessages({ db, broker, logger }) });
    components.push(scheduler);
    components.push(
      await startSender({
        db,
        broker,
        logger,
        channels: deps.channels,
        retryDelaysMs: deps.config.replyRetryDelaysMs,
        onRetryScheduled: (ms) => scheduler.wakeIn(ms),
        dispatchers: providerDispatchers(deps.config),
      }),
    );
    components.push(await startPipelineEntryConsumer({ db, broker, logger }));
    components.push(await startContactTotalsConsumer({ db, broker, logger }));
    return components;
  } catch (err) {
    // A consumer that could not start must not leave the others running behind a failed start.
    for (const c of components.reverse()) await c.stop().catch(() => {});
    throw err;
  }
}
