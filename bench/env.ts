// The environment one benchmark run gets: a fresh migrated database and a broker, built here and
// torn down after, so runs never see each other's rows or queues.
// - DATABASE_URL set: a new database on that server (dropped after); else PGlite in a temp dir.
// - AMQP_URL set: RabbitMQ under a unique namespace (deleted after); else the Postgres broker.
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import pg from 'pg';
import type { Broker } from '../src/broker/broker.ts';
import type { Database } from '../src/db/database.ts';
import { migrate } from '../src/db/migrate.ts';
import { openPglite } from '../src/db/pglite.ts';
import { connectPostgres } from '../src/db/postgres.ts';

export type BenchEnv = {
  database: 'postgres' | 'pglite';
  brokerKind: 'rabbitmq' | 'postgres';
  /** What the relay and consumers use. */
  db: Database;
  /** What the load generator writes through: its own pool on PostgreSQL, like another process. */
  writerDb: Database;
  broker: Broker;
  /** One line for reports: "PostgreSQL 15.x + RabbitMQ". */
  label: string;
  close(): Promise<void>;
};

const RETRY_DELAYS_MS = [1000, 5000];

export async function openBenchEnv(): Promise<BenchEnv> {
  const id = `${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
  const closers: Array<() => Promise<void>> = [];
  const close = async () => {
    while (closers.length) await closers.pop()!().catch((err) => console.error('bench cleanup failed:', err));
  };
  try {
    const { db, writerDb, database, version } = await openDatabase(id, closers);
    await migrate(db);
    const { broker, brokerKind } = await openBroker(id, db, closers);
    const label = `${database === 'postgres' ? `PostgreSQL ${version}` : `PGlite (PostgreSQL ${version})`} + ${brokerKind === 'rabbitmq' ? 'RabbitMQ' : 'Postgres-backed broker'}`;
    return { database, brokerKind, db, writerDb, broker, label, close };
  } catch (err) {
    await close();
    throw err;
  }
}

async function openDatabase(id: string, closers: Array<() => Promise<void>>) {
  const base = process.env.DATABASE_URL;
  if (!base) {
    const dir = mkdtempSync(path.join(tmpdir(), 'ventros-bench-'));
    closers.push(async () => rmSync(dir, { recursive: true, force: true }));
    const db = await openPglite(dir);
    closers.push(() => db.close());
    return { db, writerDb: db, database: 'pglite' as const, version: await serverVersion(db) };
  }
  const name = `ventros_bench_${id}`;
  await adminQuery(base, `CREATE DATABASE ${name}`);
  closers.push(() => adminQuery(base, `DROP DATABASE IF EXISTS ${name} WITH (FORCE)`));
  const u = new URL(base);
  u.pathname = `/${name}`;
  const db = connectPostgres({ url: u.toString(), max: 10, applicationName: 'ventros-bench' });
  closers.push(() => db.close());
  const writerDb = connectPostgres({ url: u.toString(), max: 20, applicationName: 'ventros-bench-writer' });
  closers.push(() => writerDb.close());
  return { db, writerDb, database: 'postgres' as const, version: await serverVersion(db) };
}

async function openBroker(id: string, db: Database, closers: Array<() => Promise<void>>) {
  const url = process.env.AMQP_URL;
  if (!url) {
    const { makePostgresBroker } = await import('../src/broker/postgres-broker.ts');
    const broker = makePostgresBroker({ db, retryDelaysMs: RETRY_DELAYS_MS });
    closers.push(() => broker.close());
    return { broker, brokerKind: 'postgres' as const };
  }
  const { connectRabbitBroker, deleteNamespace } = await import('../src/broker/rabbitmq.ts');
  const namespace = `bench_${id}.`;
  closers.push(() => deleteNamespace(url, namespace));
  const broker = await connectRabbitBroker({ url, db, retryDelaysMs: RETRY_DELAYS_MS, namespace });
  closers.push(() => broker.close());
  return { broker, brokerKind: 'rabbitmq' as const };
}

async function serverVersion(db: Database): Promise<string> {
  const r = await db.query<{ v: string }>(`SELECT current_setting('server_version') AS v`);
  return r.rows[0].v.split(' ')[0];
}

async function adminQuery(url: string, sql: string): Promise<void> {
  const c = new pg.Client({ connectionString: url });
  await c.connect();
  try {
    await c.query(sql);
  } finally {
    await c.end();
  }
}
