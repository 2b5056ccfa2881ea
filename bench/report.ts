// Benchmark reports: one JSON file per run (everything measured, for comparing runs) and one
// Markdown file, latest.md, with a section per scenario that each run replaces, so it always shows
// the latest result of every scenario.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

export const RESULTS_DIR = path.join(path.dirname(fileURLToPath(import.meta.url)), 'results');

/** A measured value, optionally checked against a target (`max` = at most, `min` = at least). */
export type Measure = { name: string; value: number; unit: string; target?: { kind: 'max' | 'min'; value: number } };

export type ScenarioResult = {
  scenario: string;
  environment: string;
  startedAt: string;
  durationS: number;
  /** 1-minute load average when the scenario started. */
  loadAtStart: number;
  config: Record<string, unknown>;
  measures: Measure[];
  /** Anything else worth keeping in the JSON (raw counts, per-phase details). */
  details?: Record<string, unknown>;
};

export function passes(m: Measure): boolean | undefined {
  if (!m.target) return undefined;
  return m.target.kind === 'max' ? m.value <= m.target.value : m.value >= m.target.value;
}

function machine() {
  // The load average says whether the machine was shared during the run (numbers are then low).
  return { load_average_1m: Math.round(os.loadavg()[0] * 100) / 100, cpus: os.cpus().length, cpu_model: os.cpus()[0]?.model ?? 'unknown', memory_gb: Math.round(os.totalmem() / 2 ** 30), node: process.version, platform: `${os.platform()} ${os.arch()}` };
}

/** Writes `<scenario>-<timestamp>.json` and refreshes the scenario's section of latest.md. */
export function writeReport(r: ScenarioResult): { json: string; markdown: string } {
  mkdirSync(RESULTS_DIR, { recursive: true });
  const stamp = r.startedAt.replace(/[:.]/g, '-');
  const jsonPath = path.join(RESULTS_DIR, `${r.scenario}-${stamp}.json`);
  const body = {
    scenario: r.scenario,
    environment: r.environment,
    machine: machine(),
    started_at: r.startedAt,
    duration_s: r.durationS,
    load_average_at_start: r.loadAtStart,
    config: r.config,
    measures: r.measures.map((m) => ({ ...m, pass: passes(m) })),
    details: r.details ?? {},
  };
  writeFileSync(jsonPath, JSON.stringify(body, null, 2) + '\n');

  const mdPath = path.join(RESULTS_DIR, 'latest.md');
  const previous = existsSync(mdPath) ? readFileSync(mdPath, 'utf8') : '# Benchmark results (latest run of each scenario)\n';
  writeFileSync(mdPath, replaceSection(previous, r.scenario, markdownSection(r, path.basename(jsonPath))));
  return { json: jsonPath, markdown: mdPath };
}

export function markdownSection(r: ScenarioResult, jsonName: string): string {
  const m = machine();
  const lines = [
    `## ${r.scenario}`,
    '',
    `${r.startedAt} · ${r.environment} · ${m.cpus} CPUs, Node ${m.node}, load average ${r.loadAtStart} at start, ${m.load_average_1m} at end · config \`${JSON.stringify(r.config)}\` · details in \`${jsonName}\``,
    '',
    '| measure | value | target | |',
    '|---|---:|---:|---|',
    ...r.measures.map((x) => {
      const ok = passes(x);
      const target = x.target ? `${x.target.kind === 'max' ? '≤' : '≥'} ${fmt(x.target.value)} ${x.unit}` : '';
      return `| ${x.name} | ${fmt(x.value)} ${x.unit} | ${target} | ${ok === undefined ? '' : ok ? 'pass' : 'FAIL'} |`;
    }),
    '',
  ];
  return lines.join('\n');
}

/** Replaces `## <name>` up to the next `## ` heading (or the end), or appends it. */
export function replaceSection(doc: string, name: string, section: string): string {
  const lines = doc.replace(/\s*$/, '\n').split('\n');
  const start = lines.findIndex((l) => l.trim() === `## ${name}`);
  if (start < 0) return `${doc.replace(/\s*$/, '')}\n\n${section}`;
  let end = lines.findIndex((l, i) => i > start && l.startsWith('## '));
  if (end < 0) end = lines.length;
  return [...lines.slice(0, start), ...section.replace(/\s*$/, '').split('\n'), '', ...lines.slice(end)].join('\n').replace(/\n+$/, '\n');
}

export function fmt(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Math.abs(v) >= 100) return Math.round(v).toLocaleString('en-US');
  return (Math.round(v * 10) / 10).toString();
}

/** Nearest-rank percentile of an ascending-sorted array. */
export function percentile(sorted: readonly number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const rank = Math.ceil((p / 100) * sorted.length);
  return sorted[Math.min(sorted.length, Math.max(1, rank)) - 1];
}
