// Operations on a channel's provider session. POST /channels/{id}/configure-webhook lives with the
// channel routes (channels.routes.ts); this file adds the status refresh.
import { providerDispatchers } from '../../channels/provider-dispatchers.ts';
import type { FastifyInstance } from 'fastify';
import { Type } from '@sinclair/typebox';
import type { AppDeps } from '../app.ts';
import { makeChannelStatusService } from '../../services/channel-status.service.ts';
import { IdParams, Uuid } from '../schemas/common.ts';
import { defineRoute } from '../schemas/route.ts';
import { secretKeyOf } from './channels.routes.ts';

const ChannelState = Type.Unsafe<'inactive' | 'connecting' | 'active' | 'error'>({ type: 'string', enum: ['inactive', 'connecting', 'active', 'error'] });

const Refreshed = Type.Object(
  {
    channel_id: Uuid,
    status: ChannelState,
    previous_status: ChannelState,
    provider_status: Type.String({ description: "WAHA's own word: WORKING, SCAN_QR_CODE, STARTING, FAILED, STOPPED…" }),
    changed: Type.Boolean({ description: 'true when the status moved (and channel.status_changed was emitted)' }),
  },
  { title: 'ChannelStatusRefresh' },
);

export async function channelActionsRoutes(app: FastifyInstance, deps: AppDeps): Promise<void> {
  const status = makeChannelStatusService({ db: deps.db, secretKey: () => secretKeyOf(deps), dispatcher: providerDispatchers(deps.config).waha });

  defineRoute(app, {
    method: 'POST',
    url: '/channels/:id/refresh',
    summary: "Ask WAHA for the session's state now and update the channel status",
    permission: 'channels.manage',
    params: IdParams,
    response: { 200: Refreshed },
    problems: { 422: 'Not a WAHA channel, or WAHA refused or could not be reached' },
    handler: async (req) => {
      const r = await status.refresh(req.auth.projectId, req.params.id);
      return { channel_id: r.channelId, status: r.status, previous_status: r.previousStatus, provider_status: r.providerStatus, changed: r.changed };
    },
  });
}
