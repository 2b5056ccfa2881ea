// Once per test project: build a migrated database the test files clone (graphile's approach).
// embedded → a PGlite data-dir dump in a temp file; services → a template database on PostgreSQL.
import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { PGlite } from '@electric-sql/pglite';
import pg from 'pg';
import type { TestProject } from 'vitest/node';
import { wrapPglite } from '../../src/db/pglite.ts';
import { connectPostgres } from '../../src/db/postgres.ts';
import { migrate } from '../../src/db/migrate.ts';

declare module 'vitest' {
  export interface ProvidedContext {
    pgliteDump: string;
    pgTemplate: string;
  }
}

export default async function setup(project: TestProject) {
  const target = project.config.env?.VENTROS_TEST_TARGET ?? 'embedded';
  if (target === 'embedded') {
    const dir = mkdtempSync(path.join(tmpdir(), 'ventros-test-'));
    const raw = await PGlite.create();
    await migrate(wrapPglite(raw));
    const dump = await raw.dumpDataDir('none');
    await raw.close();
    const file = path.join(dir, 'migrated.tar');
    writeFileSync(file, Buffer.from(await dump.arrayBuffer()));
    project.provide('pgliteDump', file);
    project.provide('pgTemplate', '');
    return () => rmSync(dir, { recursive: true, force: true });
  }

  const url = process.env.DATABASE_URL;
  if (!url || !process.env.AMQP_URL) throw new Error('the services project needs DATABASE_URL and AMQP_URL');
  const template = `ventros_tpl_${process.pid}_${Date.now().toString(36)}`;
  const admin = new pg.Client({ connectionString: url });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${template}`);
  await admin.end();
  const db = connectPostgres({ url: withDatabase(url, template), max: 2 });
  await migrate(db);
  await db.close();
  project.provide('pgliteDump', '');
  project.provide('pgTemplate', template);
  return async () => {
    const c = new pg.Client({ connectionString: url });
    await c.connect();
    await c.query(`DROP DATABASE IF EXISTS ${template} WITH (FORCE)`);
    await c.end();
  };
}

export function withDatabase(url: string, name: string): string {
  const u = new URL(url);
  u.pathname = `/${name}`;
  return u.toString();
}
