// What a test file runs against. `embedded`: PGlite + the Postgres-backed broker. `services`:
// PostgreSQL at DATABASE_URL + RabbitMQ at AMQP_URL. Every helper here gives the test a fresh,
// migrated database and a broker namespaced to it, and registers their cleanup.
import { readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import { afterAll, beforeEach, inject } from 'vitest';
import type { Database } from '../../src/db/database.ts';
import { wrapPglite } from '../../src/db/pglite.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { withDatabase } from './global-setup.ts';

export type Target = 'embedded' | 'services';
export const target: Target = process.env.VENTROS_TEST_TARGET === 'services' ? 'services' : 'embedded';
export const onServices = target === 'services';

const cleanups: Array<() => Promise<void>> = [];

// Registered when this module is first imported (at collection time), so cleanups added later from
// beforeAll or inside a test still run. Each test file gets its own module instance.
afterAll(async () => {
  while (cleanups.length) await cleanups.pop()!().catch((e) => console.error('cleanup failed', e));
});

/** Registers a cleanup that runs after the file's tests (last registered, first run). */
export function onCleanup(fn: () => Promise<void>): void {
  cleanups.push(fn);
}

/**
 * For a file whose tests each start their own world: what a test (or a beforeEach) registers is
 * cleaned up when that test ends, not when the file does. A file of many such tests otherwise keeps
 * every world running to its end — their workers polling, their connections open — and on
 * PostgreSQL one such file came within a few connections of the server's limit by itself.
 * What beforeAll registers still lasts for the file.
 *
 * It runs as the test's first onTestFinished handler, so after the test's own (they run last
 * first): those release gates and stop relays before the world under them is closed. It takes
 * exactly what its test registered, so a cleanup that outlasts its hook's timeout cannot take the
 * next test's with it.
 */
export function cleanUpAfterEachTest(): void {
  beforeEach((ctx) => {
    const keep = cleanups.length;
    ctx.onTestFinished(async () => {
      const mine = cleanups.splice(keep);
      while (mine.length) await mine.pop()!().catch((e) => console.error('cleanup failed', e));
    });
  });
}

export function uniqueName(prefix = 't'): string {
  return `${prefix}_${Date.now().toString(36)}_${randomBytes(3).toString('hex')}`;
}

export type TestDb = { db: Database; url?: string };

/** A fresh migrated database: a PGlite loaded from the migrated dump, or a clone of the template. */
export async function makeTestDb(): Promise<TestDb> {
  if (!onServices) {
    const dump = readFileSync(inject('pgliteDump'));
    const raw = await PGlite.create({ loadDataDir: new Blob([dump]) });
    const db = wrapPglite(raw);
    onCleanup(() => db.close());
    return { db };
  }
  const base = process.env.DATABASE_URL!;
  const name = uniqueName('ventros_t');
  const admin = new pg.Client({ connectionString: base });
  await admin.connect();
  // CREATE DATABASE … TEMPLATE fails while another session is connected to the template; retry.
  for (let i = 0; ; i++) {
    try {
      await admin.query(`CREATE DATABASE ${name} TEMPLATE ${inject('pgTemplate')}`);
      break;
    } catch (err) {
      if (i > 50) throw err;
      await new Promise((r) => setTimeout(r, 100 + Math.random() * 200));
    }
  }
  await admin.end();
  const url = withDatabase(base, name);
  // A file opens many databases and closes them at its end: idle connections go after a second,
  // so the server's connection limit holds however many tests a file has.
  const db = connectPostgres({ url, max: 10, idleTimeoutMs: 1000 });
  onCleanup(async () => {
    await db.close();
    const c = new pg.Client({ connectionString: base });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
    await c.end();
  });
  return { db, url };
}

/** Waits until `probe` returns a truthy value, polling; fails with `what` after the deadline. */
export async function waitFor<T>(probe: () => Promise<T> | T, what: string, timeoutMs = 15_000, everyMs = 25): Promise<NonNullable<T>> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  while (Date.now() < deadline) {
    try {
      const v = await probe();
      if (v) return v as NonNullable<T>;
    } catch (err) {
      last = err;
    }
    await new Promise((r) => setTimeout(r, everyMs));
  }
  throw new Error(`timed out after ${timeoutMs} ms waiting for: ${what}${last ? ` (last error: ${String(last)})` : ''}`);
}
