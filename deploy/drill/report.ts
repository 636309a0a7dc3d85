// What a failover drill measured, from the client's per-request outcomes and the moments the drill saw in
// the Kubernetes API. Pure: the same inputs give the same report (unit-tested without a cluster).
import { z } from 'zod';
import type { Outcome } from '../images/outcome.js';

export const FAULTS = ['scale', 'kill', 'blackhole'] as const;
export type DrillFault = (typeof FAULTS)[number];
export const TARGETS = ['local', 'remote'] as const;
export type DrillTarget = (typeof TARGETS)[number];

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
  /** The cluster the client ran in. */
  cluster: z.string(),
  affinity: z.string(),
  fault: z.enum(FAULTS),
  /** local: the client's own cluster's backends were faulted; remote: another cluster's. */
  target: z.enum(TARGETS),
  /** The faulted cluster and pods. */
  faulted: z.object({ cluster: z.string(), pods: z.array(z.string()) }),
  /** The ClusterIP:port the client sent to. */
  address: z.string(),
  protocol: z.string(),
  intervalMs: z.number(),
  requests: z.number().int(),
  /** Requests that got no answer, over the whole drill. */
  requestsLost: z.number().int(),
  /** From the fault to the first answer from a cluster other than the faulted one; null: none came. */
  failoverMs: z.number().nullable(),
  /** From the first faulted-cluster backend usable again to the first answer from that cluster; null: none came. */
  failbackMs: z.number().nullable(),
  /** From the first to the last failed request (when they were sent); null: none failed. */
  lossWindowMs: z.number().nullable(),
  /** When the first and last failed requests were sent, ms after the fault (negative: before it). */
  lossWindow: z.object({ from: z.number(), to: z.number() }).nullable(),
  /** From the fault to the moment the datapath stopped using the faulted backends; null: not observed. */
  ejectedAfterMs: z.number().nullable(),
  /** Where ejectedAfterMs comes from: the client node's agent view, or the client's answers. */
  ejectedFrom: z.enum(['agent', 'client']).nullable(),
  /** blackhole: whether Kubernetes kept every faulted backend ready throughout (it should); null for the others. */
  faultedStayedReady: z.boolean().nullable(),
  /** Why requests were lost: error text → count. */
  lostErrors: Share,
  /**
   * The drill's moments, ms from the first request. faultAt is what failover, loss and ejection count from:
   * for scale the loss of the last faulted backend in the EndpointSlices (terminating backends serve until
   * then), for kill the API's confirmation of the first deletion, for blackhole the last request answered before the first
   * lost one (the rules went in between; resolution: the interval), at most when the drill saw them in place.
   */
  timeline: z.object({
    /** The first request, ms since the epoch (the client node's clock): what the others count from. */
    start: z.number(),
    takenAt: z.number(),
    faultAt: z.number(),
    lostAt: z.number().nullable(),
    restoredAt: z.number(),
    readyAt: z.number(),
    end: z.number(),
  }),
  phases: z.array(Phase),
});
export type DrillReport = z.infer<typeof DrillReport>;

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
