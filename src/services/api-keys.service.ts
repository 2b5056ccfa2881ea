// API keys: vtr_-prefixed random secrets bound to one project and a role. The secret is returned
// once at creation; the database keeps its SHA-256 and a short display prefix.
import type { Database, Queryable } from '../db/database.ts';
import { withTransaction } from '../db/transaction.ts';
import type { Page } from '../db/keyset.ts';
import { findActiveApiKeyByHash, insertApiKey, listApiKeys, revokeApiKey, touchApiKey, type ApiKeyRecord } from '../db/api-keys.sql.ts';
import { API_KEY_PREFIX, displayPrefix, newSecret, secretHash } from '../domain/credentials.ts';
import { isUuid, uuidv7 } from '../domain/ids.ts';
import type { Caller, Role } from '../domain/permissions.ts';
import { notFound } from '../errors.ts';

export type ApiKeysService = ReturnType<typeof makeApiKeysService>;

export function makeApiKeysService({ db }: { db: Database }) {
  const inProject = <T>(caller: Caller, fn: (tx: Queryable) => Promise<T>) => withTransaction(db, fn, { projectId: caller.projectId });

  return {
    async create(caller: Caller, input: { name: string; role: Role }): Promise<ApiKeyRecord & { key: string }> {
      const key = newSecret(API_KEY_PREFIX);
      const record = await inProject(caller, (tx) =>
        insertApiKey(tx, {
          id: uuidv7(),
          projectId: caller.projectId,
          name: input.name.trim(),
          role: input.role,
          prefix: displayPrefix(key),
          hash: secretHash(key),
          // Who minted it, for admins tracing a removed member's keys: a signed-in user, or the
          // API key used (a key acts as itself, not as the user who made it).
          createdBy: caller.userId ?? null,
          createdByKeyId: caller.apiKeyId ?? null,
        }),
      );
      return { ...record, key };
    },

    list(caller: Caller, page: { limit?: number; cursor?: string }): Promise<Page<ApiKeyRecord>> {
      return inProject(caller, (tx) => listApiKeys(tx, caller.projectId, page));
    },

    /** Revokes a key of the caller's project; revoking twice is fine, another project's key is not found. */
    async revoke(caller: Caller, id: string): Promise<ApiKeyRecord> {
      const record = await inProject(caller, (tx) => revokeApiKey(tx, caller.projectId, id));
      if (!record) throw notFound('API key');
      return record;
    },

    /** A presented key → the caller it stands for, or undefined (unknown or revoked). */
    async resolve(key: string): Promise<{ caller: Caller; lastUsedAt: Date | null } | undefined> {
      const record = await findActiveApiKeyByHash(db, secretHash(key));
      if (!record) return undefined;
      return {
        caller: { kind: 'api_key', projectId: record.projectId, role: record.role, apiKeyId: record.id },
        lastUsedAt: record.lastUsedAt,
      };
    },

    /** Updates last_used_at (the query itself skips keys used less than a minute ago). */
    async touch(id: string): Promise<void> {
      if (isUuid(id)) await touchApiKey(db, id);
    },
  };
}
