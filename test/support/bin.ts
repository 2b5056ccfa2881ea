// `bin/ventros.js` as a user runs it: a child process with only the environment a test gives it
// (and PATH), its output collected. Children still running when a test ends are killed by
// `killBins()` (call it in afterEach), so a failing test leaves no server behind.
import { spawn, type ChildProcess } from 'node:child_process';
import path from 'node:path';

const BIN = path.resolve('bin/ventros.js');
const running = new Set<ChildProcess>();

export type BinProcess = {
  child: ChildProcess;
  /** The exit code once the process has ended and its output is all read (null after a signal). */
  exited: Promise<number | null>;
  /** stdout and stderr together, in the order they came. */
  output(): string;
  stdout(): string;
  stderr(): string;
};

export type BinOptions = { cwd?: string };

export function startBin(args: string[], env: Record<string, string>, opts: BinOptions = {}): BinProcess {
  const child = spawn(process.execPath, [BIN, ...args], {
    ...(opts.cwd ? { cwd: opts.cwd } : {}),
    env: { PATH: process.env.PATH ?? '', LOG_LEVEL: 'warn', ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  running.add(child);
  let out = '';
  let err = '';
  let both = '';
  child.stdout!.on('data', (d: Buffer) => {
    out += d;
    both += d;
  });
  child.stderr!.on('data', (d: Buffer) => {
    err += d;
    both += d;
  });
  // 'close', not 'exit': the streams may still hold the last of the output when the process exits.
  const exited = new Promise<number | null>((resolve) =>
    child.on('close', (code) => {
      running.delete(child);
      resolve(code);
    }),
  );
  return { child, exited, output: () => both, stdout: () => out, stderr: () => err };
}

export type BinResult = { code: number | null | 'still running'; out: string; err: string; output: string };

/** Runs the CLI to its end; 'still running' when it has not ended by the deadline (it is then killed by killBins). */
export async function runBin(args: string[], env: Record<string, string>, opts: BinOptions & { deadlineMs?: number } = {}): Promise<BinResult> {
  const p = startBin(args, env, opts);
  let timer: NodeJS.Timeout | undefined;
  const code = await Promise.race([
    p.exited,
    new Promise<'still running'>((resolve) => (timer = setTimeout(() => resolve('still running'), opts.deadlineMs ?? 60_000))),
  ]);
  clearTimeout(timer);
  return { code, out: p.stdout(), err: p.stderr(), output: p.output() };
}

/** Kills every child a test started that is still running. */
export function killBins(): void {
  for (const child of running) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
  running.clear();
}
