// The database port: the smallest surface both PostgreSQL (pg) and PGlite can offer.
// Query functions take a `Queryable` as their first argument; `withTransaction` is the only way
// to open a transaction (see transaction.ts).

export type Row = Record<string, any>;

export interface QueryResult<T extends Row = Row> {
  rows: T[];
  rowCount: number;
}

export interface Queryable {
  query<T extends Row = Row>(sql: string, params?: readonly unknown[]): Promise<QueryResult<T>>;
  /** Runs a script of several statements without parameters (migrations). */
  exec(sql: string): Promise<void>;
}

export type PoolStats = {
  /** The most the pool opens (DATABASE_POOL_MAX). */
  max: number;
  /** Checked out (a transaction or a statement running), or being opened. */
  busy: number;
  idle: number;
  /** Callers waiting for a connection (each gives up after the pool's wait, 5 s). */
  waiting: number;
};

export interface Database extends Queryable {
  readonly kind: 'postgres' | 'pglite';
  /**
   * Runs `fn` inside BEGIN/COMMIT on one connection; rolls back when it throws. `setup` is SQL
   * without parameters run right after BEGIN — in the same round trip where the adapter can. It
   * carries the tenant (row-level security) switch of withTransaction: a wrapper of a Database
   * must pass it on, or tenant transactions run as the owner.
   */
  transaction<T>(fn: (tx: Queryable) => Promise<T>, setup?: string): Promise<T>;
  /**
   * Subscribes to NOTIFY on a channel. Returns an unsubscribe function. `onResume` is called when
   * the listening connection is back after a drop: what was announced meanwhile was missed.
   */
  listen(channel: string, onNotify: (payload: string) => void, onResume?: () => void): Promise<() => Promise<void>>;
  /** Cheap liveness probe (SELECT 1 with a short deadline). */
  ping(timeoutMs?: number): Promise<void>;
  /** The connection pool's state now, where there is a pool (PostgreSQL; PGlite has one connection). */
  poolStats?(): PoolStats;
  close(): Promise<void>;
}
