import { readdirSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import type { Database } from './database.ts';

const MIGRATIONS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'migrations');
// Any fixed number: every migrator takes this transaction-scoped lock before it looks at what is
// applied, so two processes starting together apply each migration once (the second one waits,
// then sees the row and skips).
const MIGRATION_LOCK = 7_262_019_001;

export type Migration = { id: number; name: string; sql: string };

export function loadMigrations(dir = MIGRATIONS_DIR): Migration[] {
  const files = readdirSync(dir).filter((f) => /^\d{3}_[a-z0-9_-]+\.sql$/.test(f)).sort();
  const out = files.map((f) => ({ id: Number(f.slice(0, 3)), name: f, sql: readFileSync(path.join(dir, f), 'utf8') }));
  out.forEach((m, i) => {
    if (i > 0 && m.id === out[i - 1].id) throw new Error(`two migrations share number ${m.id}: ${out[i - 1].name}, ${m.name}`);
  });
  return out;
}

/** Applies pending migrations in order, each in its own transaction. Returns the names applied. */
export async function migrate(db: Database, migrations = loadMigrations()): Promise<string[]> {
  await db.exec(`CREATE TABLE IF NOT EXISTS schema_migrations (
    id integer PRIMARY KEY, name text NOT NULL, applied_at timestamptz NOT NULL DEFAULT now())`).catch(async (err) => {
    // Two processes racing on CREATE TABLE IF NOT EXISTS can collide on the catalog; the loser retries.
    if (!(await tableExists(db))) throw err;
  });
  const applied: string[] = [];
  for (const m of migrations) {
    const did = await db.transaction(async (tx) => {
      await tx.query('SELECT pg_advisory_xact_lock($1)', [MIGRATION_LOCK]);
      const seen = await tx.query('SELECT 1 FROM schema_migrations WHERE id = $1', [m.id]);
      if (seen.rowCount > 0) return false;
      await tx.exec(m.sql);
      await tx.query('INSERT INTO schema_migrations (id, name) VALUES ($1, $2)', [m.id, m.name]);
      return true;
    });
    if (did) applied.push(m.name);
  }
  return applied;
}

async function tableExists(db: Database): Promise<boolean> {
  const r = await db.query(`SELECT to_regclass('schema_migrations') IS NOT NULL AS ok`);
  return r.rows[0]?.ok === true;
}
