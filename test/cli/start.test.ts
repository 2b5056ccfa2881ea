// The CLI as a user runs it: a child process, real signals, real HTTP on loopback.
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { killBins, startBin } from '../support/bin.ts';
import { waitFor } from '../support/env.ts';

async function freePort(): Promise<number> {
  const srv = createServer();
  await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
  const port = (srv.address() as { port: number }).port;
  await new Promise((r) => srv.close(r));
  return port;
}

afterEach(killBins);

describe('ventros CLI', () => {
  it('exits non-zero naming PORT when PORT=abc', async () => {
    const p = startBin(['start'], { PORT: 'abc' });
    expect(await p.exited).toBe(2);
    expect(p.output()).toMatch(/PORT/);
  });

  it('exits 2 naming DATABASE_URL when a role that needs it runs without it', async () => {
    for (const role of ['api', 'worker']) {
      const p = startBin(['start', '--role', role], {});
      expect(await p.exited).toBe(2);
      expect(p.output()).toMatch(/^configuration error: DATABASE_URL: role "\w+" needs it/m);
      expect(p.output()).not.toMatch(/\n\s+at /); // a message, not a stack trace
    }
  });

  it('exits 1 when its port is taken, leaving nothing running behind it', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'ventros-cli-'));
    const taken = createServer();
    await new Promise<void>((r) => taken.listen(0, '127.0.0.1', r));
    try {
      const port = (taken.address() as { port: number }).port;
      const p = startBin(['start'], { PORT: String(port), DATA_DIR: dataDir });
      // It would otherwise stay up, its consumers and timers working, with no probes and no SIGTERM handler.
      const code = await Promise.race([p.exited, new Promise((r) => setTimeout(() => r('still running after 60 s'), 60_000))]);
      expect(code, p.output()).toBe(1);
      expect(p.output()).toMatch(/EADDRINUSE/);
    } finally {
      await new Promise((r) => taken.close(r));
      rmSync(dataDir, { recursive: true, force: true });
    }
  }, 90_000);

  it('prints every command with --help', async () => {
    const p = startBin(['--help'], {});
    expect(await p.exited).toBe(0);
    for (const cmd of ['start', 'migrate', 'simulate', '--role']) expect(p.output()).toContain(cmd);
  });

  it('starts on the embedded default, answers ready, and exits 0 on SIGTERM', async () => {
    const dataDir = mkdtempSync(path.join(tmpdir(), 'ventros-cli-'));
    try {
      const port = await freePort();
      const p = startBin(['start'], { PORT: String(port), DATA_DIR: dataDir });
      const res = await waitFor(async () => {
        const r = await fetch(`http://127.0.0.1:${port}/health/ready`);
        return r.status === 200 ? r : undefined;
      }, 'the embedded service to become ready', 120_000, 200);
      expect(await res.json()).toMatchObject({ status: 'ok' });
      p.child.kill('SIGTERM');
      expect(await p.exited).toBe(0);
    } finally {
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});
