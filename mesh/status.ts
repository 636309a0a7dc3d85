// The status contract of /v1/status: what skein-apiserver serves and what `skein status`, `skein connect`
// and `skein drill` read. One zod schema each side validates against: the server before it answers, the CLI
// before it trusts a field.
import type { Etcd3 } from 'etcd3';
import { z } from 'zod';
import { REJECT_REASONS } from './address-policy.js';
import { ROTATION_PHASES } from '../mtls/ca-rotation.js';
import { keys } from './schema/keys.js';
import { AGENT_VIEW_MAX, AgentView } from './schema/values.js';
import { AgentViews } from './agent-view.js';
import { listPrefixes } from './etcd.js';

export const ExportStatus = z.object({
  cluster: z.string(),
  clusterId: z.number().int(),
  synced: z.boolean(),
  podCidrs: z.array(z.string()),
  services: z.array(
    z.object({
      name: z.string(),
      shared: z.boolean(),
      affinity: z.string(),
      backends: z.number().int(),
      readyBackends: z.number().int(),
      /** Exported, but kept at its last good annotations (a bad one), or programming nothing (headless, no ports): why, and the fix. */
      warning: z.string().optional(),
    }),
  ),
  identities: z.number().int(),
  ips: z.number().int(),
  nodes: z.number().int(),
  etcd: z.object({
    backlog: z.number().int(),
    writes: z.number().int(),
    lastError: z.string().optional(),
    /** Writes refused since start: too large to ever fit a request (mesh/state-writer.ts). */
    refused: z.number().int().optional(),
    /** Keys whose latest value is refused now (etcd keeps what it had for them). */
    refusedWrites: z.array(z.object({ key: z.string(), bytes: z.number().int(), why: z.string() })).optional(),
  }),
  watchRestarts: z.number().int(),
  /** From process start to the initial export written. */
  initialSyncMs: z.number().optional(),
  rssBytes: z.number(),
});
export type ExportStatus = z.infer<typeof ExportStatus>;

export const RemoteStatus = z.object({
  cluster: z.string(),
  id: z.number().int(),
  endpoint: z.string(),
  connected: z.boolean(),
  synced: z.boolean(),
  stale: z.boolean(),
  lastHeartbeat: z.string().optional(),
  revision: z.number().int(),
  revisionLag: z.number().int(),
  services: z.number().int(),
  identities: z.number().int(),
  nodes: z.number().int(),
  ips: z.number().int(),
  rejected: z.number().int(),
  /** Rejections per reason (see address-policy.ts REJECT_REASONS). */
  rejectedByReason: z.partialRecord(z.enum(REJECT_REASONS), z.number().int()),
  /**
   * The peer's import quota (sync/peer-quota.ts): its cached keys and their bytes against the limits;
   * overQuota while `refusedKeys` keys beyond it are refused.
   */
  quota: z
    .object({
      keys: z.number().int(),
      bytes: z.number().int(),
      maxKeys: z.number().int(),
      maxBytes: z.number().int(),
      maxValueBytes: z.number().int(),
      overQuota: z.boolean(),
      refusedKeys: z.number().int(),
    })
    .optional(),
  /** The pod CIDRs pinned at connect time. */
  pinnedPodCidrs: z.array(z.string()),
  /** Pod CIDRs the peer advertises beyond its pin (informational: run skein connect again to re-pin). */
  advertisedBeyondPin: z.array(z.string()).optional(),
  relists: z.number().int(),
  rotations: z.number().int(),
  identityExpires: z.string().optional(),
  lastError: z.string().optional(),
});
export type RemoteStatus = z.infer<typeof RemoteStatus>;

const ServingCertificate = z.object({ serial: z.string(), notAfter: z.string(), renewals: z.number().int() });

export const ApiserverStatus = ExportStatus.extend({
  meshEndpoint: z.string(),
  trustDomain: z.string().optional(),
  /**
   * The workload CA (its Secret as this process follows it): the rotation phase (`skein ca rotate`), the
   * serial of the CA that signs, the serials of every CA in the trust bundle published now, the JWT-SVID lifetime.
   */
  workloadCa: z
    .object({
      phase: z.enum(ROTATION_PHASES),
      since: z.string().optional(),
      signer: z.string(),
      bundle: z.array(z.string()),
      /** How long a JWT-SVID it signs lives (--jwt-svid-ttl): a retired key must outlive the last token it signed. */
      jwtSvidTtlMs: z.number().int().optional(),
    })
    .optional(),
  /** This process's own mesh etcd identity: when it expires, how often it was renewed. */
  meshIdentity: z.object({ expires: z.string(), rotations: z.number().int() }).optional(),
  /** The serving certificates this process keeps (renewed at half-life): the one it serves now and how often it was renewed. */
  servingCertificates: z
    .object({
      nodeCa: ServingCertificate.optional(),
      meshEtcd: ServingCertificate.optional(),
    })
    .optional(),
  remotes: z.array(RemoteStatus),
  /** Link updates refused because they claim a trust domain the peer may not (the link keeps its last good state). */
  refusedLinks: z.array(z.object({ cluster: z.string(), reason: z.string() })).optional(),
  /** Each node agent's published view of what it has programmed (nodes whose agent is down are absent). */
  agents: z.array(AgentView),
});
export type ApiserverStatus = z.infer<typeof ApiserverStatus>;

/**
 * The node agents' published views, validated, each with at most AGENT_VIEW_MAX frontends (`truncated`
 * beyond: `skein status --node` reads one node's whole view, agentView). An unreadable one is left out
 * rather than failing status. Listed in pages: every node's shards together can exceed one gRPC message.
 */
export async function agentViews(etcd: Etcd3, cluster: string): Promise<AgentView[]> {
  const views = new AgentViews(cluster);
  const { kvs } = await listPrefixes(etcd, views.prefixes);
  for (const kv of kvs) views.apply(kv.key.toString(), kv.value.toString());
  return views.views(AGENT_VIEW_MAX);
}

/** One node's whole view (every frontend it programs), or undefined when it publishes none. */
export async function agentView(etcd: Etcd3, cluster: string, node: string): Promise<AgentView | undefined> {
  const views = new AgentViews(cluster);
  const header = await etcd.get(keys.agent(cluster, node)).string();
  if (header === null) return undefined;
  views.apply(keys.agent(cluster, node), header);
  const { kvs } = await listPrefixes(etcd, [keys.agentFrontendsPrefix(cluster, node)]);
  for (const kv of kvs) views.apply(kv.key.toString(), kv.value.toString());
  return views.view(node);
}
