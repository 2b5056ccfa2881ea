// Channels: a project's WhatsApp connections (a WAHA session, or a Cloud API phone number). The
// provider config is split on the way in: settings a user may see stay in `config`; credentials are
// sealed with SECRET_KEY into `secrets` and never leave this module in clear, except to the
// ingress (to check signatures) through openChannelSecrets().
import { randomBytes } from 'node:crypto';
import type { Database } from '../db/database.ts';
import { withTransaction } from '../db/transaction.ts';
import {
  findChannel, insertChannel, listChannels, retimeActiveSessions, softDeleteChannel, updateChannel,
  type ChannelRecord, type ChannelType,
} from '../db/channels.sql.ts';
import { pageOf, type Page } from '../db/keyset.ts';
import { uuidv7 } from '../domain/ids.ts';
import { openJson, sealJson } from '../domain/secret-box.ts';
import { AppError, invalid, notFound } from '../errors.ts';
import { parseHttpUrl, parseUrl } from '../url.ts';

export type ChannelSecrets = Partial<Record<'api_key' | 'hmac_key' | 'access_token' | 'app_secret' | 'verify_token', string>>;

/** `sentTo`: the URL setting this secret is sent to (as a header or in a request body). */
type FieldSpec = { secret: boolean; required: boolean; url?: boolean; sentTo?: string };

/** Every config key a channel type accepts. Required keys may not be removed by an update. */
export const CHANNEL_CONFIG: Record<ChannelType, Record<string, FieldSpec>> = {
  waha: {
    base_url: { secret: false, required: true, url: true },
    session: { secret: false, required: true },
    api_key: { secret: true, required: true, sentTo: 'base_url' },
    hmac_key: { secret: true, required: false, sentTo: 'base_url' },
  },
  whatsapp_cloud: {
    phone_number_id: { secret: false, required: true },
    api_base_url: { secret: false, required: false, url: true },
    api_version: { secret: false, required: false },
    access_token: { secret: true, required: true, sentTo: 'api_base_url' },
    app_secret: { secret: true, required: true },
    verify_token: { secret: true, required: true },
  },
};

export type ChannelView = Omit<ChannelRecord, 'secrets' | 'webhookToken'> & {
  /** Names of the credentials that are set (their values are never shown). */
  secretsSet: string[];
  webhookUrl: string;
  /** The channel's own timeout, or the configured default. */
  effectiveTimeoutMinutes: number;
};

export type CreateChannelInput = {
  name: string;
  type: ChannelType;
  config: Record<string, unknown>;
  sessionTimeoutMinutes?: number | null;
};

export type UpdateChannelInput = {
  name?: string;
  /** Keys to set; null removes an optional key. Absent keys keep their value. */
  config?: Record<string, unknown>;
  sessionTimeoutMinutes?: number | null;
};

export type ChannelsServiceDeps = {
  db: Database;
  secretKey: string;
  publicUrl: string;
  defaultSessionTimeoutMinutes: number;
};

export function openChannelSecrets(secretKey: string, sealed: string): ChannelSecrets {
  return openJson<ChannelSecrets>(secretKey, sealed);
}

/**
 * A channel's webhook token: 24 random bytes, base64url. Never one that starts with `-`, which a
 * command line takes for an option (`ventros simulate --token -x…` was refused as ambiguous).
 */
export function newWebhookToken(): string {
  for (;;) {
    const token = randomBytes(24).toString('base64url');
    if (!token.startsWith('-')) return token;
  }
}

/** The URL the provider posts to. WAHA carries the channel token in it; Meta signs its posts instead. */
export function webhookUrlOf(publicUrl: string, c: Pick<ChannelRecord, 'id' | 'type' | 'webhookToken'>): string {
  return c.type === 'waha'
    ? `${publicUrl}/api/v1/webhooks/waha/${c.id}?token=${encodeURIComponent(c.webhookToken)}`
    : `${publicUrl}/api/v1/webhooks/whatsapp/${c.id}`;
}

export function makeChannelsService(deps: ChannelsServiceDeps) {
  const { db, secretKey } = deps;

  const view = (c: ChannelRecord): ChannelView => {
    const { secrets, webhookToken: _token, ...rest } = c;
    return {
      ...rest,
      secretsSet: Object.keys(openChannelSecrets(secretKey, secrets)).sort(),
      webhookUrl: webhookUrlOf(deps.publicUrl, c),
      effectiveTimeoutMinutes: c.sessionTimeoutMinutes ?? deps.defaultSessionTimeoutMinutes,
    };
  };

  return {
    async create(projectId: string, input: CreateChannelInput): Promise<ChannelView> {
      const { config, secrets } = splitConfig(input.type, {}, {}, input.config);
      const record = await withTransaction(
        db,
        (tx) =>
          insertChannel(tx, {
            id: uuidv7(),
            projectId,
            name: input.name,
            type: input.type,
            config,
            secrets: sealJson(secretKey, secrets),
            webhookToken: newWebhookToken(),
            externalRef: externalRefOf(input.type, config),
            sessionTimeoutMinutes: input.sessionTimeoutMinutes ?? null,
          }),
        { projectId },
      );
      return view(record);
    },

    async list(projectId: string, query: { limit?: number; cursor?: string }): Promise<Page<ChannelView>> {
      const page = await withTransaction(db, (tx) => listChannels(tx, { ...pageOf(query), projectId }), { projectId });
      return { rows: page.rows.map(view), nextCursor: page.nextCursor };
    },

    async get(projectId: string, id: string): Promise<ChannelView> {
      const c = await withTransaction(db, (tx) => findChannel(tx, projectId, id), { projectId });
      if (!c) throw notFound('channel');
      return view(c);
    },

    async update(projectId: string, id: string, input: UpdateChannelInput): Promise<ChannelView> {
      const record = await withTransaction(
        db,
        async (tx) => {
          const current = await findChannel(tx, projectId, id, true);
          if (!current) throw notFound('channel');
          const changes: Parameters<typeof updateChannel>[3] = {};
          if (input.name !== undefined) changes.name = input.name;
          if (input.sessionTimeoutMinutes !== undefined) changes.sessionTimeoutMinutes = input.sessionTimeoutMinutes;
          if (input.config !== undefined) {
            const oldSecrets = openChannelSecrets(secretKey, current.secrets);
            const { config, secrets } = splitConfig(current.type, current.config, oldSecrets, input.config);
            changes.config = config;
            changes.secrets = sealJson(secretKey, secrets);
            changes.externalRef = externalRefOf(current.type, config);
          }
          const updated = await updateChannel(tx, projectId, id, changes);
          if (updated && input.sessionTimeoutMinutes !== undefined) await retimeActiveSessions(tx, projectId, id, input.sessionTimeoutMinutes ?? deps.defaultSessionTimeoutMinutes);
          return updated;
        },
        { projectId },
      );
      if (!record) throw notFound('channel');
      return view(record);
    },

    async remove(projectId: string, id: string): Promise<void> {
      const done = await withTransaction(db, (tx) => softDeleteChannel(tx, projectId, id), { projectId });
      if (!done) throw notFound('channel');
    },

    /** The channel with its credentials in clear, for provider calls made on the user's behalf. */
    async withSecrets(projectId: string, id: string): Promise<{ channel: ChannelView; secrets: ChannelSecrets; webhookUrl: string }> {
      const c = await withTransaction(db, (tx) => findChannel(tx, projectId, id), { projectId });
      if (!c) throw notFound('channel');
      return { channel: view(c), secrets: openChannelSecrets(secretKey, c.secrets), webhookUrl: webhookUrlOf(deps.publicUrl, c) };
    },
  };
}

export type ChannelsService = ReturnType<typeof makeChannelsService>;

/**
 * Applies `patch` to the current settings and splits the result into shown config and sealed
 * secrets, checking every key against the type's fields. All problems are reported at once.
 */
function splitConfig(
  type: ChannelType,
  currentConfig: Record<string, unknown>,
  currentSecrets: ChannelSecrets,
  patch: Record<string, unknown>,
): { config: Record<string, string>; secrets: ChannelSecrets } {
  const fields = CHANNEL_CONFIG[type];
  const merged: Record<string, unknown> = { ...currentConfig, ...currentSecrets };
  const errors: Array<{ field: string; message: string }> = [];
  for (const [key, value] of Object.entries(patch)) {
    const spec = fields[key];
    if (!spec) {
      errors.push({ field: `config.${key}`, message: `not a setting of a ${type} channel (expected ${Object.keys(fields).join(', ')})` });
    } else if (value === null) {
      delete merged[key];
    } else if (typeof value !== 'string' || value.trim() === '' || value.length > 4096) {
      errors.push({ field: `config.${key}`, message: 'must be a non-empty string of at most 4096 characters' });
    } else if (spec.secret && value !== value.trim()) {
      // Kept exactly as given, a secret pasted with a space or a line break around it fails every
      // check that uses it (every webhook a 401, Meta's challenge a 403, until Meta gives up on the
      // URL): refused, rather than trimmed into a secret the user did not give.
      errors.push({ field: `config.${key}`, message: 'must not begin or end with spaces or line breaks (a pasted secret often carries them)' });
    } else if (spec.url && !parseHttpUrl(value)) {
      errors.push({ field: `config.${key}`, message: 'must be an http(s) URL' });
    } else if (spec.url && hasUserInfo(value)) {
      // fetch refuses such a URL (every send would fail, naming it), and the URL is shown to
      // every member: a password in it would be on display.
      errors.push({ field: `config.${key}`, message: 'must not carry a user name or password (user:pass@host); give credentials in their own fields' });
    } else {
      // Shown settings are identifiers and URLs: a space pasted around one (a phone_number_id
      // that no webhook would then match) is dropped. Secrets are kept exactly as given (one with
      // a space around it was refused above).
      const v = spec.secret ? value : value.trim();
      merged[key] = spec.url ? v.replace(/\/+$/, '') : v;
    }
  }
  for (const [key, spec] of Object.entries(fields)) {
    const field = `config.${key}`;
    if (spec.required && merged[key] == null && !errors.some((e) => e.field === field)) errors.push({ field, message: 'is required' });
  }
  // A stored secret never follows its URL to a new address: whoever may edit a channel but not
  // read its credentials could otherwise point the URL at a server of theirs and have the
  // credential sent there. A new address takes the credentials given with it.
  for (const [key, spec] of Object.entries(fields)) {
    const target = spec.sentTo;
    if (!target || patch[key] !== undefined || currentSecrets[key as keyof ChannelSecrets] === undefined) continue;
    const moved = merged[target] != null && merged[target] !== currentConfig[target];
    if (moved) errors.push({ field: `config.${key}`, message: `must be sent again with a new ${target}: stored credentials are not sent to a new address` });
  }
  if (errors.length) throw invalid(`invalid ${type} channel config`, errors);

  const config: Record<string, string> = {};
  const secrets: Record<string, string> = {};
  for (const [key, spec] of Object.entries(fields)) {
    const v = merged[key];
    if (typeof v === 'string') (spec.secret ? secrets : config)[key] = v;
  }
  return { config, secrets };
}

function hasUserInfo(s: string): boolean {
  const u = parseUrl(s);
  return !!u && (u.username !== '' || u.password !== '');
}

/** The provider's own name of the channel (WAHA session, Cloud phone number id), for lookups and logs. */
function externalRefOf(type: ChannelType, config: Record<string, string>): string | null {
  return (type === 'waha' ? config.session : config.phone_number_id) ?? null;
}

/** A channel of the wrong type for an operation. */
export function wrongType(expected: ChannelType): AppError {
  return new AppError('unprocessable', `this operation needs a ${expected} channel`);
}
