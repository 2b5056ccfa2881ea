// The ingress and the processor look a channel up for every webhook; the answer changes only when
// someone edits the channel. So lookups are cached in memory, with the secrets already opened and
// the token already digested, and a change announced on the CHANNEL_CHANGES notification (sent by
// channels.sql.ts at commit, seen by every process on the database) drops the entry. A TTL bounds
// staleness should a notification be missed; when the listening connection is back after a drop,
// everything cached is dropped (what was announced meanwhile was missed); while LISTEN cannot be
// made at all, entries are kept for a second only. While the database cannot answer, an entry past its
// lifetime is still served, for up to `maxStaleMs` after it was last read (architecture.md §6: the
// ingress keeps accepting into the broker while the database is down), and read again every second.
import type { Database } from '../db/database.ts';
import { CHANNEL_CHANGES, findChannelById, type ChannelType } from '../db/channels.sql.ts';
import { UNHEARD_CACHE_MS, keepListening, type Listening } from '../db/keep-listening.ts';
import { isDatabaseUnavailable } from '../db/unavailable.ts';
import { isUuid } from '../domain/ids.ts';
import { logEvery, type Logger } from '../observability/logger.ts';
import { errorText } from '../broker/broker.ts';
import { openChannelSecrets, type ChannelSecrets } from '../services/channels.service.ts';

export type KnownChannel = {
  id: string;
  projectId: string;
  name: string;
  type: ChannelType;
  config: Record<string, unknown>;
  secrets: ChannelSecrets;
  /** The webhook token's bytes, compared in constant time with what a webhook sends (sameToken). */
  token: Buffer;
  sessionTimeoutMinutes: number;
};

export type ChannelDirectory = {
  /** The live channel, or undefined when there is none with this id. */
  get(id: string): Promise<KnownChannel | undefined>;
  invalidate(id: string): void;
  /** Subscribes to change notifications (after its first try: it keeps trying while that fails). */
  start(): Promise<void>;
  stop(): Promise<void>;
};

export type ChannelDirectoryOptions = {
  db: Database;
  /** SECRET_KEY, or how to get it when the directory is built before it is known. */
  secretKey: string | (() => string);
  defaultSessionTimeoutMinutes: number;
  logger: Logger;
  ttlMs?: number;
  /** Unknown ids are remembered briefly too, so a flood of bad URLs does not become a flood of queries. */
  missTtlMs?: number;
  maxEntries?: number;
  /** How long past its last read from the database an entry is served while reading fails. */
  maxStaleMs?: number;
};

type Entry = { value: KnownChannel | undefined; expires: number; readAt: number };

/** While a stale entry is served, the database is asked again at most this often for it. */
const STALE_RETRY_MS = 1_000;
/** How long a webhook waits for a reading of a stale entry before the entry as read is served. */
const STALE_WAIT_MS = 250;


export function makeChannelDirectory(opts: ChannelDirectoryOptions): ChannelDirectory {
  const ttl = opts.ttlMs ?? 60_000;
  const missTtl = opts.missTtlMs ?? 5_000;
  const maxEntries = opts.maxEntries ?? 10_000;
  const maxStale = opts.maxStaleMs ?? 15 * 60_000;
  const staleLog = logEvery(10_000);
  const entries = new Map<string, Entry>();
  const misses = new Map<string, Entry>();
  const maxMisses = Math.max(1, Math.floor(maxEntries / 10));
  const loading = new Map<string, { promise: Promise<KnownChannel | undefined>; startedAt: number }>();
  // Bumped by every invalidation, so a load that started before a change does not cache its result.
  let generation = 0;
  let listening: Listening | undefined;

  function invalidate(given: string): void {
    const id = given.toLowerCase();
    generation++;
    entries.delete(id);
    misses.delete(id);
    loading.delete(id);
  }

  function forgetAll(): void {
    generation++;
    entries.clear();
    misses.clear();
    loading.clear();
  }

  async function load(id: string): Promise<KnownChannel | undefined> {
    const row = await findChannelById(opts.db, id);
    if (!row) return undefined;
    return {
      id: row.id,
      projectId: row.projectId,
      name: row.name,
      type: row.type,
      config: row.config,
      secrets: openChannelSecrets(typeof opts.secretKey === 'string' ? opts.secretKey : opts.secretKey(), row.secrets),
      token: Buffer.from(row.webhookToken),
      sessionTimeoutMinutes: row.sessionTimeoutMinutes ?? opts.defaultSessionTimeoutMinutes,
    };
  }

  /** Reads the channel again and caches the answer; while the database is unavailable, the entry as last read. */
  function refresh(id: string): Promise<KnownChannel | undefined> {
    const gen = generation;
    // Loaded while no notification could drop it: kept briefly.
    const heard = listening?.heard === true;
    const keep = heard ? ttl : Math.min(ttl, UNHEARD_CACHE_MS);
    const keepMiss = heard ? missTtl : Math.min(missTtl, UNHEARD_CACHE_MS);
    const p: Promise<KnownChannel | undefined> = load(id)
      .then(
        (value) => {
          if (gen === generation) {
            // Unknown ids in a map of their own: a flood of made-up URLs evicts only other misses.
            const into = value ? entries : misses;
            entries.delete(id);
            misses.delete(id);
            if (into.size >= (value ? maxEntries : maxMisses)) into.delete(into.keys().next().value!);
            const now = Date.now();
            into.set(id, { value, expires: now + (value ? keep : keepMiss), readAt: now }); // last read, last evicted
          }
          return value;
        },
        (err: unknown) => {
          // The database is not there (not: this channel's row could not be read): what it last
          // said, if recent enough and not changed since, asked for again in a second.
          const stale = entries.get(id) ?? misses.get(id);
          if (!isDatabaseUnavailable(err) || !stale || gen !== generation || Date.now() - stale.readAt > maxStale) throw err;
          stale.expires = Date.now() + STALE_RETRY_MS;
          staleLog(() => opts.logger.warn({ channel_id: id, read_seconds_ago: Math.round((Date.now() - stale.readAt) / 1000), err: errorText(err) }, 'channel lookup failed; serving the channel as last read'));
          return stale.value;
        },
      )
      .finally(() => {
        if (loading.get(id)?.promise === p) loading.delete(id);
      });
    // A webhook served the stale entry may not wait for this reading: its failure is not unhandled.
    p.catch(() => undefined);
    return p;
  }

  return {
    get(given) {
      if (!isUuid(given)) return Promise.resolve(undefined);
      // Kept under the id as the database writes it: a webhook URL may name the channel in any
      // case, and a change notification drops the one entry whatever case its URL had.
      const id = given.toLowerCase();
      const hit = entries.get(id) ?? misses.get(id);
      if (hit && hit.expires > Date.now()) return Promise.resolve(hit.value);
      // What the database last said, if recent enough: served while it cannot answer.
      const usable = hit && Date.now() - hit.readAt <= maxStale ? hit : undefined;
      let pending = loading.get(id);
      if (!pending) {
        pending = { promise: refresh(id), startedAt: Date.now() };
        loading.set(id, pending);
      }
      if (!usable) return pending.promise;
      // A database that hangs rather than refuses must not hold the webhook either: a reading
      // that has not answered within STALE_WAIT_MS is not waited for, the entry as read is served.
      const waited = Date.now() - pending.startedAt;
      if (waited >= STALE_WAIT_MS) return Promise.resolve(usable.value);
      let timer: NodeJS.Timeout | undefined;
      const late = new Promise<KnownChannel | undefined>((resolve) => (timer = setTimeout(() => resolve(usable.value), STALE_WAIT_MS - waited)));
      return Promise.race([pending.promise, late]).finally(() => clearTimeout(timer));
    },

    invalidate,

    async start() {
      if (listening) return;
      listening = keepListening(opts.db, CHANNEL_CHANGES, invalidate, {
        logger: opts.logger,
        what: 'channel changes',
        fallback: `caching channels for ${UNHEARD_CACHE_MS / 1000} s only`,
        // Back after a drop: a change announced meanwhile was missed, so nothing cached is trusted.
        onResume: forgetAll,
      });
      await listening.first;
    },

    async stop() {
      await listening?.stop();
      listening = undefined;
      entries.clear();
      misses.clear();
    },
  };
}
