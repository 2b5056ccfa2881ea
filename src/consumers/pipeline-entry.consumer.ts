// contact.created → the new contact enters the first status of its project's default pipeline,
// when the project's setting `pipeline_auto_enter` is true. Choreography rather than a call from
// the inbound transaction: that transaction stays small and knows nothing of pipelines, and this
// reaction commits on its own, once per event (handleOnce), with its contact.status_changed.
import type { Broker, Handler } from '../broker/broker.ts';
import { consumerComponent, startConsumer } from '../broker/consumer-runner.ts';
import { Queues } from '../broker/topology.ts';
import type { Database } from '../db/database.ts';
import { autoEnterEnabled } from '../db/pipelines-ext.sql.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { handleOnce, parseEventOrSkip } from '../outbox/idempotent.ts';
import { enterDefaultPipelineTx } from '../services/pipelines.service.ts';
import type { Component } from '../deadline.ts';

export const PIPELINE_ENTRY = 'pipeline-entry';

export function pipelineEntryHandler(db: Database, log: Logger = silentLogger): Handler {
  return async (d) => {
    const e = parseEventOrSkip(d, log);
    if (!e || e.type !== 'contact.created' || !e.project_id) return;
    const { project_id: projectId, data } = e;
    // Most projects leave the setting off: then there is nothing to do and no transaction to open
    // (one read instead of five round trips per new contact). When it is on, it is read again
    // inside the transaction that acts on it. (This first read uses the owner connection, outside
    // row-level security: fine for one flag of the event's own project, not a pattern for tenant data.)
    if (!(await autoEnterEnabled(db, projectId))) return;
    await handleOnce(
      db,
      PIPELINE_ENTRY,
      e.id,
      async (tx) => {
        if (!(await autoEnterEnabled(tx, projectId))) return;
        // A contact deleted meanwhile, or one a person already placed in that pipeline, stays as it is.
        await enterDefaultPipelineTx(tx, projectId, data.contact_id);
      },
      { projectId },
    );
  };
}

export async function startPipelineEntryConsumer(deps: { db: Database; broker: Broker; logger: Logger }): Promise<Component> {
  const consumer = await startConsumer(deps.broker, { name: PIPELINE_ENTRY, queue: Queues.pipelineEntry, concurrency: 4, handle: pipelineEntryHandler(deps.db, deps.logger.child({ consumer: PIPELINE_ENTRY })) }, deps.logger);
  return consumerComponent(PIPELINE_ENTRY, consumer);
}
