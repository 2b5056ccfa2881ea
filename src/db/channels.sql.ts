// Queries on `channels`. Secrets stay sealed here (a string the service opens with SECRET_KEY);
// only the service and the ingress channel directory ever open them.
import type { Queryable, Row } from './database.ts';
import { decodeCursor, exactTime, pageSize, toPage, type Page } from './keyset.ts';

/** The name its cursors carry (keyset.ts): a cursor of another list is refused. */
const CURSOR_LIST = 'channels';

export type ChannelType = 'waha' | 'whatsapp_cloud';
export type ChannelStatus = 'inactive' | 'connecting' | 'active' | 'error';

export type ChannelRecord = {
  id: string;
  projectId: string;
  name: string;
  type: ChannelType;
  /** Non-secret provider settings, shown to users. */
  config: Record<string, unknown>;
  /** Sealed JSON of the secret settings. */
  secrets: string;
  webhookToken: string;
  externalRef: string | null;
  status: ChannelStatus;
  statusChangedAt: Date | null;
  /** NULL: the configured default applies. */
  sessionTimeoutMinutes: number | null;
  createdAt: Date;
  updatedAt: Date;
};

const COLUMNS = `id, project_id, name, type, config, secrets, webhook_token, external_ref, status, status_changed_at,
  session_timeout_minutes, created_at, updated_at`;

/** NOTIFY channel on which every change of a channel row is announced (payload: the channel id). */
export const CHANNEL_CHANGES = 'ventros_channels';

function toChannel(r: Row): ChannelRecord {
  return {
    id: r.id,
    projectId: r.project_id,
    name: r.name,
    type: r.type,
    config: r.config ?? {},
    secrets: r.secrets,
    webhookToken: r.webhook_token,
    externalRef: r.external_ref,
    status: r.status,
    statusChangedAt: r.status_changed_at ? new Date(r.status_changed_at) : null,
    sessionTimeoutMinutes: r.session_timeout_minutes ?? null,
    createdAt: new Date(r.created_at),
    updatedAt: new Date(r.updated_at),
  };
}

export type NewChannel = Pick<
  ChannelRecord,
  'id' | 'projectId' | 'name' | 'type' | 'config' | 'secrets' | 'webhookToken' | 'externalRef' | 'sessionTimeoutMinutes'
>;

export async function insertChannel(tx: Queryable, c: NewChannel): Promise<ChannelRecord> {
  const r = await tx.query(
    `INSERT INTO channels (id, project_id, name, type, config, secrets, webhook_token, external_ref, session_timeout_minutes)
     VALUES ($1, $2, $3, $4, $5::jsonb, $6, $7, $8, $9)
     RETURNING ${COLUMNS}`,
    [c.id, c.projectId, c.name, c.type, JSON.stringify(c.config), c.secrets, c.webhookToken, c.externalRef, c.sessionTimeoutMinutes],
  );
  await notifyChannelChanged(tx, c.id);
  return toChannel(r.rows[0]);
}

/** A live channel of the project, locked for update when `lock` is set. */
export async function findChannel(q: Queryable, projectId: string, id: string, lock = false): Promise<ChannelRecord | undefined> {
  const r = await q.query(
    `SELECT ${COLUMNS} FROM channels WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL${lock ? ' FOR UPDATE' : ''}`,
    [projectId, id],
  );
  return r.rows[0] ? toChannel(r.rows[0]) : undefined;
}

/**
 * A live channel by id alone, for the ingress and the processor, which learn the project from the
 * channel. Runs outside any tenant transaction (the id comes from the provider's URL).
 */
export async function findChannelById(q: Queryable, id: string): Promise<ChannelRecord | undefined> {
  const r = await q.query(`SELECT ${COLUMNS} FROM channels WHERE id = $1 AND deleted_at IS NULL`, [id]);
  return r.rows[0] ? toChannel(r.rows[0]) : undefined;
}

export async function listChannels(
  q: Queryable,
  query: { projectId: string; limit?: number; cursor?: string },
): Promise<Page<ChannelRecord>> {
  const params: unknown[] = [query.projectId];
  let after = '';
  if (query.cursor !== undefined) {
    const c = decodeCursor(CURSOR_LIST, query.cursor);
    params.push(c.at, c.id);
    after = `AND (created_at, id) < ($2::timestamptz, $3::uuid)`;
  }
  const limit = pageSize(query.limit);
  params.push(limit + 1);
  const r = await q.query(
    `SELECT ${COLUMNS}, ${exactTime('created_at')} AS k_at FROM channels
     WHERE project_id = $1 AND deleted_at IS NULL ${after}
     ORDER BY created_at DESC, id DESC
     LIMIT $${params.length}`,
    params,
  );
  return toPage(r.rows, limit, CURSOR_LIST, (row) => ({ at: row.k_at, id: row.id }), toChannel);
}

export type ChannelChanges = Partial<
  Pick<ChannelRecord, 'name' | 'config' | 'secrets' | 'webhookToken' | 'externalRef' | 'sessionTimeoutMinutes'>
>;

export async function updateChannel(tx: Queryable, projectId: string, id: string, ch: ChannelChanges): Promise<ChannelRecord | undefined> {
  const sets: string[] = [];
  const params: unknown[] = [projectId, id];
  const set = (column: string, value: unknown, cast = '') => {
    params.push(value);
    sets.push(`${column} = $${params.length}${cast}`);
  };
  if (ch.name !== undefined) set('name', ch.name);
  if (ch.config !== undefined) set('config', JSON.stringify(ch.config), '::jsonb');
  if (ch.secrets !== undefined) set('secrets', ch.secrets);
  if (ch.webhookToken !== undefined) set('webhook_token', ch.webhookToken);
  if (ch.externalRef !== undefined) set('external_ref', ch.externalRef);
  if (ch.sessionTimeoutMinutes !== undefined) set('session_timeout_minutes', ch.sessionTimeoutMinutes);
  const r = await tx.query(
    `UPDATE channels SET ${[...sets, 'updated_at = now()'].join(', ')}
     WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL
     RETURNING ${COLUMNS}`,
    params,
  );
  if (r.rows[0]) await notifyChannelChanged(tx, id);
  return r.rows[0] ? toChannel(r.rows[0]) : undefined;
}

/**
 * A channel's new session timeout, on its active sessions too: each stores the timeout it opened
 * with and renews it on every message, so without this a conversation kept alive by messages
 * would keep the old timeout for ever. Their due time moves to last activity + the new timeout;
 * one now past it is ended by the sweeper at that time. Rows in id order, so two changes at once
 * do not deadlock each other.
 */
export async function retimeActiveSessions(tx: Queryable, projectId: string, channelId: string, minutes: number): Promise<number> {
  const r = await tx.query(
    `UPDATE sessions s SET timeout_minutes = $3, due_at = s.last_activity_at + make_interval(mins => $3::int)
     WHERE s.id IN (
       SELECT id FROM sessions WHERE project_id = $1 AND channel_id = $2 AND status = 'active' AND timeout_minutes <> $3
       ORDER BY id FOR UPDATE)`,
    [projectId, channelId, minutes],
  );
  return r.rowCount;
}

export async function softDeleteChannel(tx: Queryable, projectId: string, id: string): Promise<boolean> {
  const r = await tx.query(
    `UPDATE channels SET deleted_at = now(), updated_at = now() WHERE project_id = $1 AND id = $2 AND deleted_at IS NULL`,
    [projectId, id],
  );
  if (r.rowCount > 0) await notifyChannelChanged(tx, id);
  return r.rowCount > 0;
}

/**
 * Moves the channel to `status` when it is not there already; returns the previous status, or
 * undefined when nothing changed. The sub-select locks the row first, so concurrent status events
 * each see the status the other left. With `providerTime` (a provider's status event), an event
 * older than the last one applied is stale and changes nothing (provider_status_at, migration 013).
 */
export async function setChannelStatus(
  tx: Queryable,
  id: string,
  status: ChannelStatus,
  at: Date,
  opts: { providerTime?: Date } = {},
): Promise<{ previous: ChannelStatus; name: string; type: ChannelType } | undefined> {
  // A provider event that repeats the status still moves provider_status_at on: a STARTING older
  // than a repeated WORKING is as stale as one older than the WORKING that changed the status.
  const r = await tx.query(
    `UPDATE channels c SET
       status = $2,
       status_changed_at = CASE WHEN old.status IS DISTINCT FROM $2 THEN $3 ELSE c.status_changed_at END,
       provider_status_at = GREATEST(c.provider_status_at, $4::timestamptz),
       updated_at = CASE WHEN old.status IS DISTINCT FROM $2 THEN now() ELSE c.updated_at END
     FROM (SELECT id, status, provider_status_at FROM channels WHERE id = $1 AND deleted_at IS NULL FOR UPDATE) old
     WHERE c.id = old.id AND (old.status IS DISTINCT FROM $2 OR $4::timestamptz IS NOT NULL)
       AND ($4::timestamptz IS NULL OR old.provider_status_at IS NULL OR old.provider_status_at <= $4::timestamptz)
     RETURNING old.status AS previous, old.status IS DISTINCT FROM $2 AS changed, c.name, c.type`,
    [id, status, at, opts.providerTime ?? null],
  );
  const row = r.rows[0];
  return row?.changed ? { previous: row.previous, name: row.name, type: row.type } : undefined;
}

/** Announced at commit (NOTIFY is transactional), so caches never reload a row before it exists. */
async function notifyChannelChanged(tx: Queryable, id: string): Promise<void> {
  await tx.query(`SELECT pg_notify('${CHANNEL_CHANGES}', $1)`, [id]);
}
