import pg from 'pg';
import type { Database, PoolStats, Queryable, QueryResult, Row } from './database.ts';
import { withDeadline } from '../deadline.ts';
import { markUnavailable } from './unavailable.ts';

// Timestamps come back as Date (pg default), bigint (int8) as string → we parse counts as numbers.
pg.types.setTypeParser(20, (v) => Number(v));

export type PostgresOptions = {
  url: string;
  max?: number;
  applicationName?: string;
  /** How long an idle pooled connection is kept (default 30 s). */
  idleTimeoutMs?: number;
};

export function connectPostgres(opts: PostgresOptions): Database {
  const pool = new pg.Pool({
    connectionString: opts.url,
    max: opts.max ?? 20,
    application_name: opts.applicationName ?? 'ventros',
    connectionTimeoutMillis: 5000,
    idleTimeoutMillis: opts.idleTimeoutMs ?? 30_000,
    // A pooled connection the network dropped without a reset (a failover moving the address)
    // while idle is found dead by TCP keepalive instead of only when next written to: the first
    // probe after 10 s idle, then the kernel's probes (Node 20's libuv sets only the idle time;
    // Linux's defaults, 9 probes 75 s apart, make it about 11 minutes).
    keepAlive: true,
    keepAliveInitialDelayMillis: 10_000,
  });
  // A pool client that errors while idle (server restart) must not crash the process.
  pool.on('error', () => {});

  const listeners = new Map<string, Set<(payload: string) => void>>();
  /** Told when the listening connection is back after a drop (notifications were missed). */
  const resumers = new Set<() => void>();
  let dropped = false;
  let listenClient: pg.Client | undefined;
  let listenConnecting: Promise<void> | undefined;
  let closed = false;
  let reconnectTimer: NodeJS.Timeout | undefined;

  /** The readiness probe's connection (see ping), made on the first ping. */
  let probe: Promise<pg.Client> | undefined;
  function connectProbe(): Promise<pg.Client> {
    const client = new pg.Client({
      connectionString: opts.url,
      application_name: `${opts.applicationName ?? 'ventros'}-health`,
      connectionTimeoutMillis: 5000,
      keepAlive: true,
      keepAliveInitialDelayMillis: 10_000,
    });
    const made = client.connect().then(() => client);
    // A server restart, or the connection closed under it: the next ping connects again.
    const lost = () => void dropProbe(made);
    client.on('error', lost);
    client.on('end', lost);
    return made;
  }
  /** Drops `which` (by default the current probe) if it is still the current one. */
  function dropProbe(which = probe): Promise<void> {
    if (!which || probe !== which) return Promise.resolve();
    probe = undefined;
    return which.then((c) => c.end(), () => undefined).catch(() => undefined);
  }

  async function ensureListenClient(): Promise<void> {
    if (listenClient || closed) return;
    if (listenConnecting) return listenConnecting;
    listenConnecting = (async () => {
      // Bounded: a connect or a LISTEN that never answers (a half-open connection) must fail, so
      // that its caller tries again, not wait for good.
      const client = new pg.Client({
        connectionString: opts.url,
        application_name: `${opts.applicationName ?? 'ventros'}-listen`,
        connectionTimeoutMillis: 5000,
        query_timeout: 10_000,
        keepAlive: true,
        keepAliveInitialDelayMillis: 10_000,
      });
      client.on('notification', (msg) => {
        for (const cb of listeners.get(msg.channel) ?? []) cb(msg.payload ?? '');
      });
      client.on('error', () => scheduleReconnect(client));
      client.on('end', () => scheduleReconnect(client));
      try {
        await client.connect();
        for (const ch of listeners.keys()) await client.query(`LISTEN ${quoteIdent(ch)}`);
      } catch (err) {
        client.end().catch(() => {});
        throw err;
      }
      // close() ran while this was connecting: nobody would end this connection.
      if (closed) return void (await client.end().catch(() => {}));
      listenClient = client;
      if (dropped) {
        dropped = false;
        for (const resume of [...resumers]) {
          try {
            resume();
          } catch {
            // one listener's failure is its own: the others are told all the same
          }
        }
      }
    })().finally(() => {
      listenConnecting = undefined;
    });
    return listenConnecting;
  }

  function scheduleReconnect(client: pg.Client): void {
    if (listenClient !== client) return;
    listenClient = undefined;
    dropped = true;
    client.end().catch(() => {});
    if (closed || reconnectTimer) return;
    const attempt = (delay: number) => {
      reconnectTimer = setTimeout(() => {
        reconnectTimer = undefined;
        ensureListenClient().catch(() => attempt(Math.min(delay * 2, 5000)));
      }, delay);
      reconnectTimer.unref();
    };
    attempt(200);
  }

  const db: Database = {
    kind: 'postgres',
    async query<T extends Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>> {
      const r = await pool.query(sql, params as unknown[]).catch(rethrowMarked);
      return { rows: r.rows as T[], rowCount: r.rowCount ?? 0 };
    },
    async exec(sql: string) {
      await pool.query(sql).catch(rethrowMarked);
    },
    async transaction<T>(fn: (tx: Queryable) => Promise<T>, setup?: string): Promise<T> {
      const client = await pool.connect().catch(rethrowMarked);
      let broken = false;
      // The pool listens for errors of idle clients only: one that loses its connection while
      // checked out and between statements (the server restarting, a failover) emits 'error' with
      // nobody listening, which would end the process. Heard here, the next statement fails
      // (marked unavailable) and the client is not reused.
      const onError = () => {
        broken = true;
      };
      client.on('error', onError);
      try {
        // One simple-protocol round trip for BEGIN and the setup statements.
        await client.query(setup ? `BEGIN; ${setup}` : 'BEGIN').catch(rethrowMarked);
        const tx: Queryable = {
          async query<R extends Row>(sql: string, params?: readonly unknown[]) {
            const r = await client.query(sql, params as unknown[]).catch(rethrowMarked);
            return { rows: r.rows as R[], rowCount: r.rowCount ?? 0 };
          },
          async exec(sql: string) {
            await client.query(sql).catch(rethrowMarked);
          },
        };
        const result = await fn(tx);
        await client.query('COMMIT').catch(rethrowMarked);
        return result;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => {
          broken = true;
        });
        throw err;
      } finally {
        client.removeListener('error', onError);
        client.release(broken);
      }
    },
    async listen(channel, onNotify, onResume) {
      if (closed) throw new Error('database is closed');
      // A wrapper of its own, so that the same function given twice is two subscriptions.
      const resume = onResume && (() => onResume());
      let set = listeners.get(channel);
      const isNew = !set;
      if (!set) listeners.set(channel, (set = new Set()));
      set.add(onNotify);
      if (resume) resumers.add(resume);
      const forget = (): boolean => {
        if (resume) resumers.delete(resume);
        set!.delete(onNotify);
        if (set!.size > 0 || listeners.get(channel) !== set) return false;
        listeners.delete(channel);
        return true;
      };
      let client: pg.Client | undefined;
      try {
        await ensureListenClient();
        client = listenClient;
        if (isNew && client) await client.query(`LISTEN ${quoteIdent(channel)}`);
      } catch (err) {
        // The caller gets no unsubscribe function: keep nothing of this call, or a later connection
        // would call a callback nobody can remove (a caller that tries again would add another).
        forget();
        // A LISTEN that timed out is still queued on that connection, and so would every later
        // one be: give it up and connect afresh.
        if (client) scheduleReconnect(client);
        throw err;
      }
      let done = false;
      return async () => {
        if (done) return;
        done = true;
        if (forget()) await listenClient?.query(`UNLISTEN ${quoteIdent(channel)}`).catch(() => {});
      };
    },
    async ping(timeoutMs = 2000) {
      if (closed) throw new Error('database is closed');
      // On a connection of its own, not the pool's: a pool busy with lock waits (every connection
      // taken, requests queued behind them) would make every process answer its readiness probe
      // 503 at once while the database is up. A connection that did not answer in time may be
      // half-open: it is dropped, and the next ping makes another.
      const mine = (probe ??= connectProbe());
      const asked = mine.then((c) => c.query('SELECT 1'));
      try {
        await withDeadline(asked, timeoutMs, 'database did not answer');
      } catch (err) {
        asked.catch(() => {});
        void dropProbe(mine);
        throw err;
      }
    },
    poolStats(): PoolStats {
      return { max: pool.options.max, busy: pool.totalCount - pool.idleCount, idle: pool.idleCount, waiting: pool.waitingCount };
    },
    async close() {
      if (closed) return; // closing twice is harmless (shutdown paths may overlap)
      closed = true;
      if (reconnectTimer) clearTimeout(reconnectTimer);
      const c = listenClient;
      listenClient = undefined;
      await c?.end().catch(() => {});
      await dropProbe();
      await pool.end();
    },
  };
  return db;
}

/** Marks an error of ours that says the server is unavailable (unavailable.ts), then throws it. */
function rethrowMarked(err: unknown): never {
  throw markUnavailable(err);
}

export function quoteIdent(name: string): string {
  return `"${name.replace(/"/g, '""')}"`;
}
