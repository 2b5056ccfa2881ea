// One process at a time on an embedded data directory: PGlite takes no lock of its own, and two
// processes writing one directory leave it unreadable. A second open — in this process, or a
// `migrate` run beside a running server — is refused naming DATA_DIR; a lock left by a process
// that is gone (killed, crashed, the same pid in a restarted container) is taken over.
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { ConfigError, loadConfig } from '../../src/config.ts';
import { startVentros } from '../../src/main.ts';
import { silentLogger } from '../../src/observability/logger.ts';
import { openPglite } from '../../src/db/pglite.ts';
import { killBins, runBin } from '../support/bin.ts';

const dirs: string[] = [];
function scratch(): string {
  const d = mkdtempSync(path.join(tmpdir(), 'ventros-lock-'));
  dirs.push(d);
  return path.join(d, 'pglite');
}
afterEach(() => {
  killBins();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

/** The pid of a process that has ended. */
async function deadPid(): Promise<number> {
  const child = spawn(process.execPath, ['-e', '']);
  await new Promise((r) => child.once('exit', r));
  return child.pid!;
}

describe('the embedded data directory lock', () => {
  it('refuses a second open while the first is open, and takes it again once closed', async () => {
    const dir = scratch();
    const db = await openPglite(dir);
    await db.query('CREATE TABLE kept (n int)');
    const second = await openPglite(dir).then(() => 'opened', (err: unknown) => err);
    expect(second).toBeInstanceOf(ConfigError);
    expect((second as ConfigError).variable).toBe('DATA_DIR');
    expect((second as Error).message).toContain(`in use by process ${process.pid}`);
    await db.close();
    expect(existsSync(`${dir}.lock`)).toBe(false);
    const again = await openPglite(dir);
    expect((await again.query('SELECT count(*)::int AS n FROM kept')).rows[0].n).toBe(0);
    await again.close();
  });

  it('refuses `migrate` from another process while a server holds the directory', async () => {
    const dir = scratch();
    const db = await openPglite(dir);
    try {
      // DATA_DIR is the folder whose `pglite` directory is the database.
      const r = await runBin(['migrate'], { DATA_DIR: path.dirname(dir), SECRET_KEY: 'k'.repeat(32) });
      expect(r.code, r.output).toBe(2);
      expect(r.output).toContain(`in use by process ${process.pid}`);
      expect(r.output).not.toMatch(/\n\s+at /);
    } finally {
      await db.close();
    }
  }, 60_000);

  it('takes over a lock left by a process that is gone, or by an earlier life of this pid', async () => {
    const dir = scratch();
    writeFileSync(`${dir}.lock`, `${await deadPid()}\n`);
    const db = await openPglite(dir);
    await db.close();
    writeFileSync(`${dir}.lock`, `${process.pid}\n`); // as after a container restart: pid 1 again
    const again = await openPglite(dir);
    await again.close();
    expect(existsSync(`${dir}.lock`)).toBe(false);
  });

  it('refuses a lock held by another live process', async () => {
    const dir = scratch();
    writeFileSync(`${dir}.lock`, `${process.ppid}\n`);
    await expect(openPglite(dir)).rejects.toThrow(new RegExp(`in use by process ${process.ppid}`));
  });

  it('is let go when a start fails after opening the database, so that a second start can take it', async () => {
    const dir = scratch();
    const dataDir = path.dirname(dir);
    // The broker cannot be reached: the start fails after the database was opened and migrated.
    const config = loadConfig({ DATA_DIR: dataDir, SECRET_KEY: 'k'.repeat(32), HOST: '127.0.0.1', PORT: '0', AMQP_URL: 'amqp://guest:guest@127.0.0.1:1/' });
    await expect(startVentros({ config, logger: silentLogger })).rejects.toThrow();
    expect(existsSync(`${dir}.lock`)).toBe(false);
    const db = await openPglite(dir);
    expect((await db.query<{ n: number }>('SELECT count(*)::int AS n FROM schema_migrations')).rows[0].n).toBeGreaterThan(0);
    await db.close();
  }, 60_000);
});

