// The failover drill's report: what `skein drill` prints as JSON, writes into its standalone HTML report,
// and keeps (the last few) in the drill history ConfigMap the dashboard reads. Shared because it crosses the
// Kubernetes API between the CLI (writer) and skein-apiserver (reader).
import { z } from 'zod';

export const FAULTS = ['scale', 'kill', 'blackhole'] as const;
export type DrillFault = (typeof FAULTS)[number];
export const TARGETS = ['local', 'remote'] as const;
export type DrillTarget = (typeof TARGETS)[number];

const Share = z.record(z.string(), z.number().int());
const Phase = z.object({
  name: z.enum(['before', 'failover', 'after']),
  requests: z.number().int(),
  failed: z.number().int(),
  /** Answers per cluster that gave them. */
  answeredBy: Share,
});

/**
 * Requests per time bucket (by when they were sent, from the first request): answered per cluster, and
 * failed. What the timeline chart draws; optional so reports of older CLIs still parse.
 */
export const DrillBuckets = z.object({
  bucketMs: z.number().positive(),
  answered: z.record(z.string(), z.array(z.number().int().min(0))),
  failed: z.array(z.number().int().min(0)),
});
export type DrillBuckets = z.infer<typeof DrillBuckets>;

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
  buckets: DrillBuckets.optional(),
});
export type DrillReport = z.infer<typeof DrillReport>;

/**
 * The drill history: a ConfigMap in skein-system the drill CLI writes (newest first) and skein-apiserver
 * only reads, for the dashboard. Bounded in count and bytes (a ConfigMap holds at most 1 MiB).
 */
export const DRILL_HISTORY = {
  configMap: 'skein-drills',
  key: 'drills.json',
  maxDrills: 10,
  maxBytes: 512 * 1024,
} as const;
export const DrillHistory = z.array(DrillReport);
