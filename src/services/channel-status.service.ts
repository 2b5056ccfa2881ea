// A channel's connection status on demand (POST /channels/{id}/refresh): ask the provider for the
// session's state now, instead of waiting for its next session.status webhook. A change is
// recorded and announced (channel.status_changed) exactly as the webhook path records it.
import type { Dispatcher } from 'undici';
import { wahaConnectionOf, wahaSessionStatus } from '../channels/waha.client.ts';
import { findChannel, setChannelStatus, type ChannelStatus } from '../db/channels.sql.ts';
import type { Database } from '../db/database.ts';
import { withTransaction } from '../db/transaction.ts';
import { newEvent } from '../domain/events.ts';
import { AppError, notFound } from '../errors.ts';
import { parseWahaEvent } from '../inbound/waha/waha.parser.ts';
import { appendEvents } from '../outbox/outbox.sql.ts';
import { openChannelSecrets, wrongType } from './channels.service.ts';

export type RefreshedStatus = { channelId: string; status: ChannelStatus; previousStatus: ChannelStatus; providerStatus: string; changed: boolean };

/**
 * WAHA's word for a session state → our channel status, read through the webhook parser as if
 * WAHA had posted session.status: both paths map the same words the same way.
 */
function channelStatusOf(providerStatus: string): ChannelStatus | undefined {
  const [e] = parseWahaEvent({ event: 'session.status', payload: { status: providerStatus } });
  return e?.kind === 'channel_status' ? e.status : undefined;
}

export function makeChannelStatusService(deps: { db: Database; secretKey: () => string; timeoutMs?: number; dispatcher?: Dispatcher | undefined }) {
  const { db } = deps;
  return {
    async refresh(projectId: string, channelId: string): Promise<RefreshedStatus> {
      const channel = await withTransaction(db, (tx) => findChannel(tx, projectId, channelId), { projectId });
      if (!channel) throw notFound('channel');
      if (channel.type !== 'waha') throw wrongType('waha');
      const secrets = openChannelSecrets(deps.secretKey(), channel.secrets);
      const answer = await wahaSessionStatus(wahaConnectionOf({ config: channel.config, secrets }, deps.timeoutMs ?? 10_000, deps.dispatcher));
      if (!answer.ok) throw new AppError('unprocessable', answer.error);
      const status = channelStatusOf(answer.status);
      if (!status) throw new AppError('unprocessable', `WAHA reported a session status we do not know: ${answer.status}`);
      const changed = await withTransaction(
        db,
        async (tx) => {
          const c = await setChannelStatus(tx, channel.id, status, new Date());
          if (!c) return undefined;
          await appendEvents(tx, [
            newEvent('channel.status_changed', {
              projectId,
              aggregateId: channel.id,
              data: { channel_id: channel.id, name: c.name, type: c.type, status, previous_status: c.previous, reason: answer.status },
            }),
          ]);
          return c;
        },
        { projectId },
      );
      return { channelId: channel.id, status, previousStatus: changed?.previous ?? status, providerStatus: answer.status, changed: changed !== undefined };
    },
  };
}
