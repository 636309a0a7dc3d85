// What a failover drill measured, from the client's per-request outcomes and the moments the drill saw in
// the Kubernetes API. Pure: the same inputs give the same report (unit-tested without a cluster).
import { DrillReport, type DrillBuckets, type DrillFault, type DrillTarget } from '../../mesh/drill-report.js';
import type { Outcome } from '../images/outcome.js';

export { DrillReport, FAULTS, TARGETS, type DrillFault, type DrillTarget } from '../../mesh/drill-report.js';
type PhaseResult = DrillReport['phases'][number];

/** Moments in ms since the epoch, all on one clock (the drill checks the client's clock agrees). */
interface DrillEvents {
  /** The drill applied the fault: scaled the target backends to zero, deleted them, or dropped their traffic. */
  takenAt: number;
  /**
   * When the fault existed for the cluster. kill: the API confirmed the first deletion (what kill counts from:
   * the API's own time to record a deletion, ~0.1-0.3 s on a loaded test bed, is no part of failover).
   * blackhole: the first faulted pod's rules were in place (its iptables-restore returned; seen up to a few
   * hundred ms late on a loaded machine): blackhole counts from the last request answered before the first
   * one lost, at most this. null/absent: takenAt.
   */
  inEffectAt?: number | null;
  /** The target cluster's EndpointSlices showed none of the faulted backends ready any more; null: never (blackhole). */
  lostAt: number | null;
  /** The drill undid the fault (scale: replicas back; blackhole: rules removed; kill: the owner's own, = takenAt). */
  restoredAt: number;
  /** A backend in the target cluster was usable again (scale, kill: a new endpoint ready; blackhole: = restoredAt). */
  readyAt: number;
  /** When the client's node agent showed every faulted backend ejected (its view's own times); null/absent: not shown. */
  agentEjectedAt?: number | null;
}

export interface ReportInput {
  service: string;
  cluster: string;
  affinity: string;
  fault: DrillFault;
  target: DrillTarget;
  /** The cluster whose backends were faulted (the client's own for target local). */
  faultedCluster: string;
  /** The faulted backends' pod names, as the answers name them. */
  faultedPods: readonly string[];
  address: string;
  protocol: string;
  intervalMs: number;
  outcomes: readonly Outcome[];
  events: DrillEvents;
  faultedStayedReady?: boolean | null;
}

const answeredAt = (o: Outcome) => o.at + o.ms;
const round = (ms: number) => Math.round(ms * 10) / 10;

/** The moment failover, loss and ejection count from (see DrillReport.timeline). */
function faultMoment(fault: DrillFault, events: Pick<DrillEvents, 'takenAt' | 'inEffectAt' | 'lostAt'>, sorted: readonly Outcome[]): number {
  if (fault === 'scale') return events.lostAt ?? events.takenAt;
  if (fault === 'kill') return events.inEffectAt ?? events.takenAt;
  // The rules went in after the last request answered before the first one lost (one at a time: within an
  // interval), and no later than the drill saw them in place; with nothing lost, when the drill struck.
  const firstLost = sorted.findIndex((o) => !o.ok && o.at >= events.takenAt);
  if (firstLost < 0) return events.takenAt;
  const lastOk = sorted.slice(0, firstLost).findLast((o) => o.ok);
  return Math.min(Math.max(events.takenAt, lastOk?.at ?? events.takenAt), events.inEffectAt ?? Infinity);
}

/** When the first and the last failed request were sent; undefined: none failed. */
export function lossSpan(outcomes: readonly Outcome[]): { first: number; last: number } | undefined {
  const lost = outcomes.filter((o) => !o.ok).map((o) => o.at);
  return lost.length ? { first: Math.min(...lost), last: Math.max(...lost) } : undefined;
}

/**
 * From the client's outcomes: when the datapath stopped using the faulted backends — the send time of the
 * first request, among those sent while the fault lasted ([from, until)), after which no request went to a
 * faulted backend (failed, or answered by a faulted pod). undefined: the last such request still did (the
 * datapath never stopped while the fault lasted), or no request was sent in that window.
 */
export function clientEjectedAt(outcomes: readonly Outcome[], faultedPods: ReadonlySet<string>, from: number, until: number): number | undefined {
  const during = [...outcomes].filter((o) => o.at >= from && o.at < until).sort((a, b) => a.seq - b.seq);
  let lastBad = -1;
  during.forEach((o, i) => {
    if (!o.ok || (o.pod !== undefined && faultedPods.has(o.pod))) lastBad = i;
  });
  return during[lastBad + 1]?.at;
}

/** About this many buckets per chart: fine enough to see a failover, coarse enough to count in. */
const CHART_BUCKETS = 150;

/**
 * Requests per time bucket by when they were sent, from `start`: answered per cluster, and failed. The
 * bucket is a whole multiple of 10 ms, at least the request interval (no empty teeth between requests).
 */
function drillBuckets(sorted: readonly Outcome[], start: number, intervalMs: number): DrillBuckets {
  const span = sorted.length ? sorted.at(-1)!.at - start : 0;
  const bucketMs = Math.max(intervalMs, 10, Math.ceil(span / CHART_BUCKETS / 10) * 10);
  const count = Math.floor(span / bucketMs) + 1;
  const answered: Record<string, number[]> = {};
  const failed = new Array<number>(count).fill(0);
  for (const o of sorted) {
    const i = Math.min(count - 1, Math.max(0, Math.floor((o.at - start) / bucketMs)));
    if (!o.ok) failed[i]!++;
    else (answered[o.cluster ?? 'unknown'] ??= new Array<number>(count).fill(0))[i]!++;
  }
  return { bucketMs, answered, failed };
}

export function drillReport(input: ReportInput): DrillReport {
  const { outcomes, events, cluster, faultedCluster } = input;
  const sorted = [...outcomes].sort((a, b) => a.seq - b.seq);
  const start = sorted[0]?.at ?? events.takenAt;
  const faultAt = faultMoment(input.fault, events, sorted);
  const phaseOf = (o: Outcome): PhaseResult['name'] => (o.at < events.takenAt ? 'before' : o.at < events.readyAt ? 'failover' : 'after');
  const phases: PhaseResult[] = (['before', 'failover', 'after'] as const).map((name) => {
    const mine = sorted.filter((o) => phaseOf(o) === name);
    const answeredBy: Record<string, number> = {};
    for (const o of mine) if (o.ok) answeredBy[o.cluster ?? 'unknown'] = (answeredBy[o.cluster ?? 'unknown'] ?? 0) + 1;
    return { name, requests: mine.length, failed: mine.filter((o) => !o.ok).length, answeredBy };
  });
  const firstElsewhere = sorted.find((o) => o.ok && o.cluster !== faultedCluster && o.at >= events.takenAt);
  const firstBack = sorted.find((o) => o.ok && o.cluster === faultedCluster && answeredAt(o) >= events.readyAt);
  const lost = sorted.filter((o) => !o.ok);
  const lostErrors: Record<string, number> = {};
  for (const o of lost) lostErrors[o.error ?? 'unknown'] = (lostErrors[o.error ?? 'unknown'] ?? 0) + 1;
  const span = lossSpan(sorted);
  const fromClient = clientEjectedAt(sorted, new Set(input.faultedPods), events.takenAt, events.readyAt);
  const ejectedAt = events.agentEjectedAt ?? fromClient;
  return {
    service: input.service,
    cluster,
    affinity: input.affinity,
    fault: input.fault,
    target: input.target,
    faulted: { cluster: faultedCluster, pods: [...input.faultedPods].sort() },
    address: input.address,
    protocol: input.protocol,
    intervalMs: input.intervalMs,
    requests: sorted.length,
    requestsLost: lost.length,
    failoverMs: firstElsewhere ? round(Math.max(0, answeredAt(firstElsewhere) - faultAt)) : null,
    failbackMs: firstBack ? round(Math.max(0, answeredAt(firstBack) - events.readyAt)) : null,
    lossWindowMs: span ? round(span.last - span.first) : null,
    lossWindow: span ? { from: round(span.first - faultAt), to: round(span.last - faultAt) } : null,
    ejectedAfterMs: ejectedAt === undefined ? null : round(Math.max(0, ejectedAt - faultAt)),
    ejectedFrom: events.agentEjectedAt != null ? 'agent' : fromClient !== undefined ? 'client' : null,
    faultedStayedReady: input.fault === 'blackhole' ? (input.faultedStayedReady ?? null) : null,
    lostErrors,
    timeline: {
      start,
      takenAt: round(events.takenAt - start),
      faultAt: round(faultAt - start),
      lostAt: events.lostAt === null ? null : round(events.lostAt - start),
      restoredAt: round(events.restoredAt - start),
      readyAt: round(events.readyAt - start),
      end: round((sorted.at(-1) ? answeredAt(sorted.at(-1)!) : events.readyAt) - start),
    },
    phases,
    buckets: drillBuckets(sorted, start, input.intervalMs),
  };
}

const pct = (n: number, of: number) => (of ? `${Math.round((100 * n) / of)}%` : '-');
const ms = (v: number | null) => (v === null ? 'not observed' : `${v} ms`);

const FAULT_TEXT: Record<DrillFault, string> = {
  scale: 'scaled to zero',
  kill: 'deleted abruptly (grace 0)',
  blackhole: 'blackholed (no answers, Kubernetes unaware)',
};

export function renderDrillReport(r: DrillReport): string {
  const others = [...new Set(r.phases.flatMap((p) => Object.keys(p.answeredBy)))].filter((c) => c !== r.cluster).sort();
  const columns = [r.cluster, ...others, 'failed'];
  const f = r.faulted.cluster;
  const from = r.fault === 'scale' ? `last ${f} backend lost` : r.fault === 'kill' ? 'first deletion confirmed' : 'fault';
  const lines = [
    `drill of ${r.service} from ${r.cluster} (affinity ${r.affinity}): ${r.requests} ${r.protocol} requests to ${r.address}, one every ${r.intervalMs} ms`,
    `  fault          ${r.fault}: ${r.faulted.pods.length} ${r.target} backend${r.faulted.pods.length === 1 ? '' : 's'} in ${f} ${FAULT_TEXT[r.fault]}`,
    `  failover       ${ms(r.failoverMs)}   (${from} -> first answer from another cluster)`,
    `  failback       ${ms(r.failbackMs)}   (first ${f} backend ${r.fault === 'blackhole' ? 'answering' : 'ready'} again -> first answer from ${f})`,
    `  ejected after  ${ms(r.ejectedAfterMs)}   (${from} -> datapath stopped using the faulted backends${r.ejectedFrom ? `; from the ${r.ejectedFrom === 'agent' ? "client node's agent" : "client's answers"}` : ''})`,
    `  loss window    ${r.lossWindowMs === null ? 'none' : `${r.lossWindowMs} ms`}${r.lossWindow ? `   (first to last failed request, sent ${r.lossWindow.from} ms to ${r.lossWindow.to} ms after the ${r.fault === 'scale' ? 'loss' : 'fault'})` : ''}`,
    `  requests lost  ${r.requestsLost}${r.requestsLost ? `   (${Object.entries(r.lostErrors).map(([e, n]) => `${e} x${n}`).join(', ')})` : ''}`,
  ];
  if (r.faultedStayedReady !== null) lines.push(`  kubernetes     ${r.faultedStayedReady ? 'kept every blackholed backend ready throughout' : 'marked a blackholed backend not ready (its probe failed): not a silent fault'}`);
  lines.push('', `  ${'PHASE'.padEnd(9)} ${'REQUESTS'.padStart(8)}  ${columns.map((c) => c.padStart(Math.max(7, c.length))).join('  ')}`);
  for (const p of r.phases) {
    const cells = columns.map((c) => pct(c === 'failed' ? p.failed : (p.answeredBy[c] ?? 0), p.requests).padStart(Math.max(7, c.length)));
    lines.push(`  ${p.name.padEnd(9)} ${String(p.requests).padStart(8)}  ${cells.join('  ')}`);
  }
  return lines.join('\n');
}
