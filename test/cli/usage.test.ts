// Bad usage of a command is exit code 2 with one line naming the problem and the command's usage,
// never a stack trace; `--help` on a command prints help and does nothing else.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { runCli } from '../../src/cli.ts';
import { killBins, runBin, type BinResult } from '../support/bin.ts';
import { withConsole } from '../support/console.ts';

const dirs: string[] = [];

/** A fresh directory for a child to work in; DATA_DIR (not created) under it. */
function scratch(): { cwd: string; dataDir: string } {
  const cwd = mkdtempSync(path.join(tmpdir(), 'ventros-usage-'));
  dirs.push(cwd);
  return { cwd, dataDir: path.join(cwd, 'data') };
}

/**
 * The CLI as a user runs it, in a scratch directory, with no database or broker URL: nothing it
 * might do by mistake reaches anything but that directory.
 */
function run(args: string[], env: Record<string, string>, cwd: string, deadlineMs = 60_000): Promise<BinResult> {
  return runBin(args, env, { cwd, deadlineMs });
}

/** runCli in this process, its console output captured. */
async function cli(args: string[]): Promise<{ code: number; out: string; err: string }> {
  return withConsole(() => runCli(args));
}

const STACK = /\n\s+at |ERR_PARSE_ARGS/;

afterEach(() => {
  killBins();
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('ventros CLI usage', () => {
  it('refuses an unknown option, a missing value or a stray argument to start with exit 2, one line and the usage', async () => {
    // Each is refused while parsing, before anything is configured or started.
    const cases: Array<[string[], string]> = [
      [['start', '--port', '9000'], 'ventros start: unknown option "--port"'],
      [['start', '--role'], 'ventros start: --role needs a value'],
      [['start', '--role', '-h'], 'ventros start: --role needs a value (one starting with "-" is given as --role=<value>)'],
      [['start', 'now'], 'ventros start: unexpected argument "now"'],
      [['start', '--role', 'everything'], 'ventros start: --role must be all, api or worker (got "everything")'],
    ];
    for (const [args, line] of cases) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(2);
      expect(r.err.split('\n'), args.join(' ')).toEqual([line, 'usage: ventros start [--role all|api|worker]   (ventros --help for more)']);
      expect(r.out, args.join(' ')).toBe('');
    }
  });

  it('prints help for start -h and --help, starting nothing', async () => {
    for (const flag of ['-h', '--help']) {
      const r = await cli(['start', flag]);
      expect(r.code, flag).toBe(0);
      expect(r.out, flag).toContain('ventros start [--role all|api|worker]');
      expect(r.err, flag).toBe('');
    }
  });

  it('exits 2 without a stack for an unknown option, as a user runs it', async () => {
    const { cwd, dataDir } = scratch();
    const r = await run(['start', '--port', '9000'], { DATA_DIR: dataDir }, cwd);
    expect(r.code, r.err).toBe(2);
    expect(r.err).toBe('ventros start: unknown option "--port"\nusage: ventros start [--role all|api|worker]   (ventros --help for more)\n');
    expect(r.err).not.toMatch(STACK);
    expect(existsSync(dataDir)).toBe(false);
  });

  it('prints help for migrate --help and -h and applies nothing; refuses anything else it is given with exit 2', async () => {
    const runs = await Promise.all(
      [['--help'], ['-h'], ['--force'], ['now'], ['--help', 'now']].map(async (extra) => {
        const { cwd, dataDir } = scratch();
        return { extra, dataDir, ...(await run(['migrate', ...extra], { DATA_DIR: dataDir }, cwd)) };
      }),
    );
    for (const r of runs) {
      const what = `migrate ${r.extra.join(' ')}: ${r.out}${r.err}`;
      // Applying migrations on the embedded database would have created DATA_DIR.
      expect(existsSync(r.dataDir), what).toBe(false);
      expect(r.out, what).not.toMatch(/applied|up to date/);
      expect(r.err, what).not.toMatch(STACK);
    }
    const [help, h, force, stray, helpAndStray] = runs;
    for (const r of [help, h]) {
      expect(r.code, r.err).toBe(0);
      expect(r.out).toContain('ventros migrate');
      expect(r.err).toBe('');
    }
    expect(force.code).toBe(2);
    expect(force.err).toBe('ventros migrate: unknown option "--force"\nusage: ventros migrate   (ventros --help for more)\n');
    expect(stray.code).toBe(2);
    expect(stray.err).toMatch(/^ventros migrate: unexpected argument "now"\n/);
    expect(helpAndStray.code).toBe(2);
  }, 90_000);

  it('refuses PORT=0 without PUBLIC_URL at start-up with exit 2 naming both, starting nothing', async () => {
    const { cwd, dataDir } = scratch();
    const r = await run(['start'], { PORT: '0', DATA_DIR: dataDir }, cwd, 30_000);
    expect(r.code, r.out + r.err).toBe(2);
    expect(r.err).toMatch(/^configuration error: PORT: .*PUBLIC_URL/m);
    expect(r.err).not.toMatch(STACK);
    expect(existsSync(dataDir)).toBe(false);
  }, 60_000);

  it('prints the simulator\'s usage for simulate --help and -h, with exit 0', async () => {
    for (const args of [['simulate', '--help'], ['simulate', '-h'], ['simulate', 'waha', '-h'], ['simulate', 'waha', '--help']]) {
      const r = await cli(args);
      expect(r.code, args.join(' ')).toBe(0);
      expect(r.out, args.join(' ')).toMatch(/^usage: ventros simulate waha --channel <id>/);
    }
  });
});
