// What a project admin sees of the machinery: queues, dead letters (and their replay), parse
// errors, and the event log. Every read runs in the caller's tenant transaction, so row-level
// security hides other projects' rows even where a query forgot to.
//
// Queue depth, retrying and consumers are global infrastructure: they are shown to every project
// admin as they are (whether processing is backed up concerns their data too, and the numbers
// name no tenant's data), while dead-letter counts and rows are the caller's project's only.
// Dead letters without a project (system messages) are visible to no project.
import { errorText, PROJECT_HEADER, type Broker, type QueueStats } from '../broker/broker.ts';
import { Queues } from '../broker/topology.ts';
import { getDeadLetter, listDeadLetters, replayDeadLetter, ReplaySendError, type DeadLetter } from '../broker/dead-letters.sql.ts';
import type { Database, Queryable } from '../db/database.ts';
import { findChannel } from '../db/channels.sql.ts';
import { countDeadLettersByQueue } from '../db/dead-letters-read.sql.ts';
import type { Page } from '../db/keyset.ts';
import { getParseError, listParseErrorsPage } from '../db/parse-errors-read.sql.ts';
import { markParseErrorReplay, unmarkParseErrorReplay, type ParseErrorRecord } from '../db/parse-errors.sql.ts';
import { withTransaction } from '../db/transaction.ts';
import { uuidv7 } from '../domain/ids.ts';
import type { Caller } from '../domain/permissions.ts';
import { EnvelopeHeaders } from '../inbound/ingress.ts';
import { AppError, notFound } from '../errors.ts';
import { listEvents, type StoredEvent } from '../outbox/outbox.sql.ts';
import { silentLogger, type Logger } from '../observability/logger.ts';

export type QueueView = Omit<QueueStats, 'deadLetters'> & { deadLetters: number };

export type AdminService = ReturnType<typeof makeAdminService>;

/** How long a replay waits for the broker to take its message before answering 503. */
const REPLAY_SEND_TIMEOUT_MS = 5000;

/** A replay the broker did not take: a 503 to retry, or to force when its mark could not be given back. */
function notSent(what: string, sendError: unknown, markKept: boolean): AppError {
  return new AppError(
    'unavailable',
    `${what} could not be queued again: ${errorText(sendError)}; ${markKept ? 'its replay mark could not be taken back either, so it shows one replay more than went out: replay it again with force=true' : 'nothing was marked; retry (a send that timed out may still arrive: what it carries is applied once)'}`,
  );
}

export function makeAdminService({ db, broker, logger = silentLogger }: { db: Database; broker: Broker; logger?: Logger }) {
  const inProject = <T>(caller: Caller, fn: (tx: Queryable) => Promise<T>) => withTransaction(db, fn, { projectId: caller.projectId });

  return {
    async queues(caller: Caller): Promise<QueueView[]> {
      const [stats, mine] = await Promise.all([broker.stats(), inProject(caller, (tx) => countDeadLettersByQueue(tx, caller.projectId))]);
      const views = stats.map((s) => ({ ...s, deadLetters: mine.get(s.queue) ?? 0 }));
      for (const [queue, n] of mine) {
        if (!views.some((v) => v.queue === queue)) views.push({ queue, depth: 0, retrying: 0, consumers: 0, deadLetters: n });
      }
      return views.sort((a, b) => a.queue.localeCompare(b.queue));
    },

    async deadLetters(caller: Caller, f: { queue?: string; limit?: number; cursor?: string }): Promise<Page<DeadLetter>> {
      const page = await inProject(caller, (tx) => listDeadLetters(tx, { projectId: caller.projectId, queue: f.queue, limit: f.limit ?? 50, cursor: f.cursor }));
      return { rows: page.items, nextCursor: page.nextCursor ?? null };
    },

    /** One dead letter of the caller's project, its body whole. */
    async deadLetter(caller: Caller, id: string): Promise<DeadLetter> {
      const d = await inProject(caller, (tx) => getDeadLetter(tx, id, { projectId: caller.projectId }));
      if (!d) throw notFound('dead letter');
      return d;
    },

    /** One parse error of the caller's project, its body whole. */
    async parseError(caller: Caller, id: string): Promise<ParseErrorRecord & { bodySize: number }> {
      const p = await inProject(caller, (tx) => getParseError(tx, caller.projectId, id));
      if (!p) throw notFound('parse error');
      return p;
    },

    /**
     * Sends a dead letter of the caller's project back to its queue. One replayed already is
     * refused unless `force`: its message went back then (and a death since wrote a dead letter of
     * its own), so a second replay — a double click, two people at once — would only apply it again
     * once the consumers' markers of it are pruned.
     */
    async replay(caller: Caller, id: string, o: { force?: boolean } = {}): Promise<DeadLetter> {
      // Looked up under row-level security first: the second wall also guards the replay.
      const own = await inProject(caller, (tx) => getDeadLetter(tx, id, { projectId: caller.projectId }));
      if (!own) throw notFound('dead letter');
      if (own.replayedAt && !o.force) {
        throw new AppError(
          'conflict',
          `dead letter ${own.id} was replayed at ${own.replayedAt.toISOString()} (${own.replayCount} ${own.replayCount === 1 ? 'time' : 'times'}): its message went back to ${own.queue} then, and a death since is a dead letter of its own; replay it again with force=true`,
        );
      }
      const replayed = await replayDeadLetter(db, broker, id, { projectId: caller.projectId, seen: own.replayCount, timeoutMs: REPLAY_SEND_TIMEOUT_MS }).catch((err: unknown) => {
        if (!(err instanceof ReplaySendError)) throw err;
        if (err.markKept) logger.error({ dead_letter_id: own.id, project_id: caller.projectId, err: err.releaseError, send_error: errorText(err.sendError) }, 'dead-letter replay not sent, and its mark could not be given back');
        throw notSent(`the message of dead letter ${own.id}`, err.sendError, err.markKept);
      });
      if (!replayed) throw notFound('dead letter');
      if (replayed === 'taken') throw new AppError('conflict', `dead letter ${own.id} is being replayed by another request, or was just now`);
      return replayed;
    },

    /**
     * Sends a parse error's webhook through the inbound processor again, as a new message of the
     * raw queue with the envelope it had: what it names is applied now if it can be (the message an
     * ack waited for has arrived; a parser fix reads it), parked again as a new parse error if not.
     * Messages are deduplicated by their provider id, so a replay never stores one twice. One
     * replayed already is refused unless `force`, as a dead letter is.
     */
    async replayParseError(caller: Caller, id: string, o: { force?: boolean } = {}): Promise<ParseErrorRecord> {
      // The row and whether its channel still exists, in one transaction.
      const { own, channelExists } = await inProject(caller, async (tx) => {
        const p = await getParseError(tx, caller.projectId, id);
        return { own: p, channelExists: p?.channelId ? (await findChannel(tx, caller.projectId, p.channelId)) !== undefined : false };
      });
      if (!own) throw notFound('parse error');
      if (!own.channelId) throw new AppError('unprocessable', `parse error ${own.id} names no channel: its webhook cannot be processed again`);
      // The processor would drop it as for an unknown channel, after this had answered 202.
      if (!channelExists) {
        throw new AppError('unprocessable', `the channel of parse error ${own.id} was deleted: its webhook cannot be processed again`);
      }
      if (own.replayedAt && !o.force) {
        throw new AppError(
          'conflict',
          `parse error ${own.id} was replayed at ${own.replayedAt.toISOString()} (${own.replayCount} ${own.replayCount === 1 ? 'time' : 'times'}): its webhook went through again then, and one parked again since is a parse error of its own; replay it again with force=true`,
        );
      }
      const marked = await inProject(caller, (tx) => markParseErrorReplay(tx, caller.projectId, own.id, own.replayCount));
      if (!marked) {
        // Housekeeping may have deleted it meanwhile (past EVENT_RETENTION_DAYS).
        if (!(await inProject(caller, (tx) => getParseError(tx, caller.projectId, own.id)))) throw notFound('parse error');
        throw new AppError('conflict', `parse error ${own.id} is being replayed by another request, or was just now`);
      }
      // The envelope as the ingress wrote it, under this project whatever the stored headers say.
      const headers = { ...own.headers, [EnvelopeHeaders.channelId]: own.channelId, [EnvelopeHeaders.provider]: own.provider, [PROJECT_HEADER]: caller.projectId };
      try {
        await broker.send(Queues.inboundRaw, [{ messageId: uuidv7(), body: own.body, headers }], { timeoutMs: REPLAY_SEND_TIMEOUT_MS });
      } catch (err) {
        const released = await inProject(caller, (tx) => unmarkParseErrorReplay(tx, caller.projectId, own.id, marked.replayCount, own.replayedAt)).then(
          () => true,
          (unmarkErr: unknown) => {
            logger.error({ parse_error_id: own.id, project_id: caller.projectId, err: unmarkErr, send_error: errorText(err) }, 'parse-error replay not sent, and its mark could not be given back');
            return false;
          },
        );
        throw notSent(`the webhook of parse error ${own.id}`, err, !released);
      }
      return { ...own, ...marked };
    },

    parseErrors(caller: Caller, f: { channelId?: string; limit?: number; cursor?: string }): Promise<Page<ParseErrorRecord>> {
      return inProject(caller, (tx) => listParseErrorsPage(tx, { ...f, projectId: caller.projectId }));
    },

    async events(
      caller: Caller,
      f: { type?: string; aggregateId?: string; since?: string; until?: string; limit?: number; cursor?: string },
    ): Promise<Page<StoredEvent>> {
      const page = await inProject(caller, (tx) => listEvents(tx, { ...f, projectId: caller.projectId, limit: f.limit ?? 50 }));
      return { rows: page.data, nextCursor: page.nextCursor };
    },
  };
}
