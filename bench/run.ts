// `npm run bench [-- <scenario…>] [--key=value…]`: runs the named scenarios (all when none is
// named), each in a fresh environment (bench/env.ts), and writes bench/results/<scenario>-<time>.json
// plus the scenario's section of bench/results/latest.md.
// Options come from `--key=value` arguments or BENCH_<KEY> environment variables (KEY upper-case,
// dashes as underscores), e.g. `--rate=500 --duration=5` or BENCH_DURATION=5.
import os from 'node:os';
import { performance } from 'node:perf_hooks';
import { openBenchEnv, type BenchEnv } from './env.ts';
import { fmt, passes, writeReport, type Measure } from './report.ts';
import { relayScenario } from './scenarios/relay.ts';
import { webhooksScenario } from './scenarios/webhooks.ts';
import { ingressScenario } from './scenarios/ingress.ts';
import { inboundScenario } from './scenarios/inbound.ts';

export type Options = {
  number(name: string, def: number): number;
  /** Comma-separated numbers: `--relays=1,3`. */
  list(name: string, def: number[]): number[];
  string(name: string, def: string): string;
};

export type Scenario = {
  name: string;
  description: string;
  run(env: BenchEnv, opts: Options): Promise<{ config: Record<string, unknown>; measures: Measure[]; details?: Record<string, unknown> }>;
};

const SCENARIOS: Scenario[] = [relayScenario, webhooksScenario, ingressScenario, inboundScenario];

function parseArgs(argv: string[]): { names: string[]; opts: Options } {
  const names: string[] = [];
  const given = new Map<string, string>();
  for (const a of argv) {
    const m = /^--([a-z0-9-]+)=(.*)$/.exec(a);
    if (m) given.set(m[1], m[2]);
    else if (a === '--help' || a === '-h') names.push('--help');
    else if (a.startsWith('--')) throw new Error(`expected --key=value, got "${a}"`);
    else names.push(a);
  }
  const raw = (name: string) => given.get(name) ?? process.env[`BENCH_${name.toUpperCase().replace(/-/g, '_')}`];
  const opts: Options = {
    number(name, def) {
      const v = raw(name);
      if (v === undefined || v === '') return def;
      const n = Number(v);
      if (!Number.isFinite(n) || n < 0) throw new Error(`--${name}: expected a non-negative number, got "${v}"`);
      return n;
    },
    list(name, def) {
      const v = raw(name);
      if (v === undefined || v === '') return def;
      const out = v.split(',').map(Number);
      if (out.some((n) => !Number.isInteger(n) || n < 1)) throw new Error(`--${name}: expected positive integers like 1,3, got "${v}"`);
      return out;
    },
    string: (name, def) => raw(name) || def,
  };
  return { names, opts };
}

function usage(): string {
  return [
    'usage: npm run bench [-- <scenario…>] [--key=value…]',
    '',
    'scenarios:',
    ...SCENARIOS.map((s) => `  ${s.name.padEnd(12)} ${s.description}`),
    '',
    'relay options: --rate=1000 --duration=20 --warmup=2 --drain=50000 --relays=1,3 --batch=500 --poll=1000 --consumer-concurrency=32',
    'webhooks options: --events=3000 --concurrency=64 --rate=200 --duration=20 --warmup=2 --phases=throughput,isolation,e2e',
    'ingress options: --concurrency=64,256 --duration=10 (two runs of half each per pair) --warmup=2 (before every run) --rate=2000 --rate-duration=15 --floor-duration=5',
    'inbound options: --rate=500 --duration=20 --contacts=2000 --drain=30000 --processors=2',
    'Runs on PostgreSQL when DATABASE_URL is set (in a fresh database, dropped after) and on RabbitMQ',
    'when AMQP_URL is set (in a unique namespace, deleted after); on PGlite and the Postgres broker otherwise.',
  ].join('\n');
}

async function main(): Promise<number> {
  const { names, opts } = parseArgs(process.argv.slice(2));
  if (names.includes('--help')) {
    console.log(usage());
    return 0;
  }
  const unknown = names.filter((n) => !SCENARIOS.some((s) => s.name === n));
  if (unknown.length) {
    console.error(`unknown scenario: ${unknown.join(', ')}\n\n${usage()}`);
    return 2;
  }
  const chosen = names.length ? SCENARIOS.filter((s) => names.includes(s.name)) : SCENARIOS;
  let failed = false;
  for (const s of chosen) {
    const env = await openBenchEnv();
    const startedAt = new Date().toISOString();
    const loadAtStart = Math.round(os.loadavg()[0] * 100) / 100;
    const t0 = performance.now();
    console.log(`\n▶ ${s.name} on ${env.label} (load average ${loadAtStart})`);
    try {
      const r = await s.run(env, opts);
      const result = { scenario: s.name, environment: env.label, startedAt, loadAtStart, durationS: Math.round((performance.now() - t0) / 100) / 10, ...r };
      const files = writeReport(result);
      for (const m of r.measures) {
        const ok = passes(m);
        const target = m.target ? ` (target ${m.target.kind === 'max' ? '≤' : '≥'} ${fmt(m.target.value)}: ${ok ? 'pass' : 'FAIL'})` : '';
        console.log(`  ${m.name.padEnd(44)} ${fmt(m.value).padStart(10)} ${m.unit}${target}`);
      }
      console.log(`  report: bench/results/${files.json.split(/[\\/]/).pop()} and bench/results/latest.md`);
    } catch (err) {
      failed = true;
      console.error(`✗ ${s.name} failed:`, err);
    } finally {
      await env.close();
    }
  }
  return failed ? 1 : 0;
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err instanceof Error ? err.message : err);
    process.exit(2);
  },
);
