// What a failover drill measured, from the client's per-request outcomes and the moments the drill saw in
// the Kubernetes API. Pure: the same inputs give the same report (unit-tested without a cluster).
import { z } from 'zod';
import type { Outcome } from '../images/outcome.js';

/** Moments in ms since the epoch, all on one clock (the drill checks the client's clock agrees). */
interface DrillEvents {
  /** The drill scaled the local backends to zero. */
  takenAt: number;
  /** The service's EndpointSlices in this cluster showed no ready endpoint any more. */
  lostAt: number;
  /** The drill scaled them back. */
  restoredAt: number;
  /** The first local endpoint was ready again. */
  readyAt: number;
}

const Share = z.record(z.string(), z.number().int());
const Phase = z.object({
  name: z.enum(['before', 'failover', 'after']),
  requests: z.number().int(),
  failed: z.number().int(),
  /** Answers per cluster that gave them. */
  answeredBy: Share,
});

type PhaseResult = z.infer<typeof Phase>;

export const DrillReport = z.object({
  service: z.string(),
  cluster: z.string(),
  affinity: z.string(),
  target: z.string(),
  protocol: z.string(),
  intervalMs: z.number(),
  requests: z.number().int(),
  /** Requests that got no answer, over the whole drill. */
  requestsLost: z.number().int(),
  /** From the loss of the last ready local backend to the first answer from another cluster; null: none came. */
  failoverMs: z.number().nullable(),
  /** From the first local backend ready again to the first answer from this cluster; null: none came. */
  failbackMs: z.number().nullable(),
  /** Why requests were lost: error text → count. */
  lostErrors: Share,
  /** When the lost requests were sent, relative to the loss of the last local backend (ms). */
  lostWindowMs: z.object({ from: z.number(), to: z.number() }).nullable(),
  /** The drill's moments, ms from the first request. */
  timeline: z.object({ takenAt: z.number(), lostAt: z.number(), restoredAt: z.number(), readyAt: z.number(), end: z.number() }),
  phases: z.array(Phase),
});
export type DrillReport = z.infer<typeof DrillReport>;

export interface ReportInput {
  service: string;
  cluster: string;
  affinity: string;
  target: string;
  protocol: string;
  intervalMs: number;
  outcomes: readonly Outcome[];
  events: DrillEvents;
}

const answeredAt = (o: Outcome) => o.at + o.ms;
const round = (ms: number) => Math.round(ms * 10) / 10;

export function drillReport(input: ReportInput): DrillReport {
  const { outcomes, events, cluster } = input;
  const sorted = [...outcomes].sort((a, b) => a.seq - b.seq);
  const start = sorted[0]?.at ?? events.takenAt;
  const phaseOf = (o: Outcome): PhaseResult['name'] => (o.at < events.takenAt ? 'before' : o.at < events.readyAt ? 'failover' : 'after');
  const phases: PhaseResult[] = (['before', 'failover', 'after'] as const).map((name) => {
    const mine = sorted.filter((o) => phaseOf(o) === name);
    const answeredBy: Record<string, number> = {};
    for (const o of mine) if (o.ok) answeredBy[o.cluster ?? 'unknown'] = (answeredBy[o.cluster ?? 'unknown'] ?? 0) + 1;
    return { name, requests: mine.length, failed: mine.filter((o) => !o.ok).length, answeredBy };
  });
  const firstRemote = sorted.find((o) => o.ok && o.cluster !== cluster && o.at >= events.takenAt);
  const firstLocalBack = sorted.find((o) => o.ok && o.cluster === cluster && answeredAt(o) >= events.readyAt);
  const lost = sorted.filter((o) => !o.ok);
  const lostErrors: Record<string, number> = {};
  for (const o of lost) lostErrors[o.error ?? 'unknown'] = (lostErrors[o.error ?? 'unknown'] ?? 0) + 1;
  return {
    service: input.service,
    cluster,
    affinity: input.affinity,
    target: input.target,
    protocol: input.protocol,
    intervalMs: input.intervalMs,
    requests: sorted.length,
    requestsLost: lost.length,
    lostErrors,
    failoverMs: firstRemote ? round(Math.max(0, answeredAt(firstRemote) - events.lostAt)) : null,
    failbackMs: firstLocalBack ? round(Math.max(0, answeredAt(firstLocalBack) - events.readyAt)) : null,
    lostWindowMs: lost.length ? { from: round(lost[0]!.at - events.lostAt), to: round(lost.at(-1)!.at - events.lostAt) } : null,
    timeline: {
      takenAt: round(events.takenAt - start),
      lostAt: round(events.lostAt - start),
      restoredAt: round(events.restoredAt - start),
      readyAt: round(events.readyAt - start),
      end: round((sorted.at(-1) ? answeredAt(sorted.at(-1)!) : events.readyAt) - start),
    },
    phases,
  };
}

const pct = (n: number, of: number) => (of ? `${Math.round((100 * n) / of)}%` : '-');
const ms = (v: number | null) => (v === null ? 'not observed' : `${v} ms`);

export function renderDrillReport(r: DrillReport): string {
  const others = [...new Set(r.phases.flatMap((p) => Object.keys(p.answeredBy)))].filter((c) => c !== r.cluster).sort();
  const columns = [r.cluster, ...others, 'failed'];
  const lines = [
    `drill of ${r.service} from ${r.cluster} (affinity ${r.affinity}): ${r.requests} ${r.protocol} requests to ${r.target}, one every ${r.intervalMs} ms`,
    `  failover       ${ms(r.failoverMs)}   (last local backend lost -> first answer from another cluster)`,
    `  failback       ${ms(r.failbackMs)}   (first local backend ready -> first answer from ${r.cluster})`,
    `  requests lost  ${r.requestsLost}${r.lostWindowMs ? `   (sent ${r.lostWindowMs.from} ms to ${r.lostWindowMs.to} ms after the loss: ${Object.entries(r.lostErrors).map(([e, n]) => `${e} x${n}`).join(', ')})` : ''}`,
    '',
    `  ${'PHASE'.padEnd(9)} ${'REQUESTS'.padStart(8)}  ${columns.map((c) => c.padStart(Math.max(7, c.length))).join('  ')}`,
  ];
  for (const p of r.phases) {
    const cells = columns.map((c) => pct(c === 'failed' ? p.failed : (p.answeredBy[c] ?? 0), p.requests).padStart(Math.max(7, c.length)));
    lines.push(`  ${p.name.padEnd(9)} ${String(p.requests).padStart(8)}  ${cells.join('  ')}`);
  }
  return lines.join('\n');
}
