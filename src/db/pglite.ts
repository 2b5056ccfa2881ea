import { mkdirSync, readFileSync, unlinkSync, writeFileSync } from 'node:fs';
import { PGlite } from '@electric-sql/pglite';
import { ConfigError } from '../config.ts';
import type { Database, Queryable, QueryResult, Row } from './database.ts';
import { withDeadline } from '../deadline.ts';

/**
 * The embedded database: real PostgreSQL compiled to WASM, in this process. `dataDir` undefined
 * means in memory (tests). PGlite is a single connection; it serialises queries and holds other
 * callers while a transaction runs, so code must never query `db` from inside a transaction.
 */
export async function openPglite(dataDir?: string): Promise<Database> {
  if (!dataDir) return wrapPglite(await PGlite.create());
  mkdirSync(dataDir, { recursive: true });
  const unlock = lockDataDir(dataDir);
  try {
    return wrapPglite(await PGlite.create(dataDir), unlock);
  } catch (err) {
    unlock();
    throw err;
  }
}

/**
 * One process at a time on a data directory: PGlite takes no lock of its own, and two processes
 * writing one directory (a second `npm start`, a `migrate` beside a running server) leave it
 * unreadable. `<dir>.lock` holds the owner's pid; one left by a process that is gone is taken over.
 * Returns the release.
 */
export function lockDataDir(dataDir: string): () => void {
  const file = `${dataDir}.lock`;
  for (let attempt = 0; ; attempt++) {
    try {
      writeFileSync(file, `${process.pid}\n`, { flag: 'wx' });
      held.add(file);
      return () => {
        held.delete(file);
        try {
          if (readFileSync(file, 'utf8').trim() === String(process.pid)) unlinkSync(file);
        } catch {
          // gone already
        }
      };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    }
    const owner = readOwner(file);
    // Our own pid is in use only if this process holds the lock: otherwise the file was left by an
    // earlier life of a process that always gets the same pid (pid 1 in a container).
    const inUse = owner === process.pid ? held.has(file) : owner !== undefined && isAlive(owner);
    if (inUse) {
      throw new ConfigError('DATA_DIR', `the embedded database in ${dataDir} is in use by process ${owner}; stop it first (or use DATABASE_URL for several processes). If no such process is Ventros, delete ${file}.`);
    }
    if (attempt > 0) throw new ConfigError('DATA_DIR', `could not take ${file}: another process is taking it at the same time`);
    takeOver(file, owner);
  }
}

/**
 * Removes a lock whose owner is gone. Only one process at a time may: two that both saw the dead
 * owner would otherwise each remove the file, the second removing the first's fresh lock. A
 * process that dies while taking over leaves `<lock>.takeover` behind; one whose owner is gone too
 * is cleared for the next start.
 */
function takeOver(file: string, deadOwner: number | undefined): void {
  const mutex = `${file}.takeover`;
  try {
    writeFileSync(mutex, `${process.pid}\n`, { flag: 'wx' });
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    const holder = readOwner(mutex);
    if (holder === undefined || !isAlive(holder)) rmQuietly(mutex);
    return; // the caller tries once more, and refuses if the lock is still there
  }
  try {
    if (readOwner(file) === deadOwner) rmQuietly(file); // still the dead owner's, not a newcomer's
  } finally {
    rmQuietly(mutex);
  }
}

function rmQuietly(file: string): void {
  try {
    unlinkSync(file);
  } catch {
    // gone already
  }
}

/** The lock files this process holds. */
const held = new Set<string>();

function readOwner(file: string): number | undefined {
  try {
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  } catch {
    return undefined;
  }
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'EPERM'; // alive, another user's
  }
}

function toResult<T extends Row>(r: { rows: unknown[]; affectedRows?: number }): QueryResult<T> {
  return { rows: r.rows as T[], rowCount: Math.max(r.rows.length, r.affectedRows ?? 0) };
}

export function wrapPglite(pg: PGlite, onClose?: () => void): Database {
  let closed = false;
  return {
    kind: 'pglite',
    async query<T extends Row>(sql: string, params?: readonly unknown[]) {
      return toResult<T>(await pg.query(sql, params as unknown[]));
    },
    async exec(sql: string) {
      await pg.exec(sql);
    },
    async transaction<T>(fn: (tx: Queryable) => Promise<T>, setup?: string): Promise<T> {
      return pg.transaction(async (t) => {
        if (setup) await t.exec(setup);
        const tx: Queryable = {
          async query<R extends Row>(sql: string, params?: readonly unknown[]) {
            return toResult<R>(await t.query(sql, params as unknown[]));
          },
          async exec(sql: string) {
            await t.exec(sql);
          },
        };
        return fn(tx);
      }) as Promise<T>;
    },
    async listen(channel, onNotify) {
      const unsub = await pg.listen(channel, onNotify);
      return async () => {
        if (!closed) await unsub();
      };
    },
    async ping(timeoutMs = 2000) {
      if (closed) throw new Error('database is closed');
      await withDeadline(pg.query('SELECT 1'), timeoutMs, 'database did not answer');
    },
    async close() {
      if (closed) return;
      closed = true;
      try {
        await pg.close();
      } finally {
        onClose?.();
      }
    },
  };
}
