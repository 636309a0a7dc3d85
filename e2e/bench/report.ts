// Benchmark results: percentiles, one JSON file per run and a readable table on stdout.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { REPO_ROOT } from '../../testbed/repo.js';

export interface Result {
  name: string;
  unit: string;
  samples?: number;
  p50?: number;
  p90?: number;
  p99?: number;
  max?: number;
  value?: number;
  note?: string;
}

function percentile(sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN;
  const i = Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1));
  return sorted[i]!;
}

export function distribution(name: string, unit: string, samples: number[], note?: string): Result {
  const s = [...samples].sort((a, b) => a - b);
  const r = (x: number) => Math.round(x * 100) / 100;
  return { name, unit, samples: s.length, p50: r(percentile(s, 50)), p90: r(percentile(s, 90)), p99: r(percentile(s, 99)), max: r(s.at(-1) ?? NaN), note };
}

export function table(results: Result[]): string {
  const rows = results.map((r) => [
    r.name,
    r.samples !== undefined ? `p50 ${r.p50} / p90 ${r.p90} / p99 ${r.p99} / max ${r.max} ${r.unit} (n=${r.samples})` : `${r.value} ${r.unit}`,
    r.note ?? '',
  ]);
  const w0 = Math.max(...rows.map((r) => r[0]!.length), 9);
  const w1 = Math.max(...rows.map((r) => r[1]!.length), 6);
  return [`${'BENCHMARK'.padEnd(w0)}  ${'RESULT'.padEnd(w1)}  NOTE`, ...rows.map((r) => `${r[0]!.padEnd(w0)}  ${r[1]!.padEnd(w1)}  ${r[2]}`)].join('\n');
}

export function writeResults(suite: string, results: Result[], meta: Record<string, unknown>): string {
  const dir = join(REPO_ROOT, 'bench-results');
  mkdirSync(dir, { recursive: true });
  const file = join(dir, `${suite}.json`);
  writeFileSync(file, JSON.stringify({ suite, at: new Date().toISOString(), meta, results }, null, 2));
  return file;
}
