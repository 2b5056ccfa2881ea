// session.ended → the contact's conversation totals (sessions ended, time in conversation, when
// the last one ended). A consumer rather than part of the close: the sweeper's transaction ends
// many sessions of many contacts at once and should lock only sessions; this reaction commits on
// its own, once per event (handleOnce). It emits no event.
import type { Broker, Handler } from '../broker/broker.ts';
import { consumerComponent, startConsumer } from '../broker/consumer-runner.ts';
import { Queues } from '../broker/topology.ts';
import type { Database } from '../db/database.ts';
import { addEndedSessionToContact } from '../db/session-lifecycle.sql.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';
import { handleOnce, parseEventOrSkip } from '../outbox/idempotent.ts';
import type { Component } from '../deadline.ts';

export const CONTACT_TOTALS = 'contact-totals';

export function contactTotalsHandler(db: Database, log: Logger = silentLogger): Handler {
  return async (d) => {
    const e = parseEventOrSkip(d, log);
    if (!e || e.type !== 'session.ended' || !e.project_id) return;
    const { project_id: projectId, data } = e;
    await handleOnce(
      db,
      CONTACT_TOTALS,
      e.id,
      async (tx) => {
        await addEndedSessionToContact(tx, {
          projectId,
          contactId: data.contact_id,
          durationSeconds: data.duration_seconds,
          endedAt: new Date(data.ended_at),
        });
      },
      { projectId },
    );
  };
}

export async function startContactTotalsConsumer(deps: { db: Database; broker: Broker; logger: Logger }): Promise<Component> {
  const consumer = await startConsumer(deps.broker, { name: CONTACT_TOTALS, queue: Queues.contactTotals, concurrency: 4, handle: contactTotalsHandler(deps.db, deps.logger.child({ consumer: CONTACT_TOTALS })) }, deps.logger);
  return consumerComponent(CONTACT_TOTALS, consumer);
}
