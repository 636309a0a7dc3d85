// The dashboard's JSON contract: what skein-apiserver serves under /dashboard/api/ and its browser UI reads
// (ui/ imports these types only). Read-only views of state the apiserver already holds; nothing secret:
// certificates appear by their expiry alone, never a key, PEM or credential.
import { z } from 'zod';

/** A link from this cluster to a connected remote, as this cluster's sync engine sees it. */
export const LinkState = z.enum(['synced', 'syncing', 'stale', 'disconnected', 'over-quota']);
export type LinkState = z.infer<typeof LinkState>;

const DashboardLink = z.object({
  cluster: z.string(),
  id: z.number().int(),
  state: LinkState,
  connected: z.boolean(),
  synced: z.boolean(),
  stale: z.boolean(),
  lastHeartbeat: z.string().optional(),
  revisionLag: z.number().int(),
  services: z.number().int(),
  rejected: z.number().int(),
  quota: z.object({ keys: z.number().int(), maxKeys: z.number().int(), bytes: z.number().int(), maxBytes: z.number().int(), refusedKeys: z.number().int() }).optional(),
  /** When this cluster's read identity at that peer expires (renewed at half-life). */
  identityExpires: z.string().optional(),
  lastError: z.string().optional(),
});
export type DashboardLink = z.infer<typeof DashboardLink>;

const AgentSummary = z.object({
  node: z.string(),
  at: z.string(),
  frontends: z.number().int(),
  backends: z.number().int(),
  failures: z.number().int(),
  ejected: z.number().int(),
});

const BundleSummary = z.object({
  trustDomain: z.string(),
  cluster: z.string(),
  own: z.boolean(),
  /** The CA certificate's expiry (ISO time); absent when it cannot be read. */
  notAfter: z.string().optional(),
});

export const DashboardOverview = z.object({
  cluster: z.string(),
  clusterId: z.number().int(),
  synced: z.boolean(),
  trustDomain: z.string().optional(),
  /** This apiserver's own mesh etcd identity's expiry. */
  meshIdentityExpires: z.string().optional(),
  services: z.number().int(),
  nodes: z.number().int(),
  identities: z.number().int(),
  links: z.array(DashboardLink),
  agents: z.array(AgentSummary),
  bundles: z.array(BundleSummary),
  /** Bumps on every change the dashboard shows (the SSE stream carries it). */
  version: z.number().int(),
});
export type DashboardOverview = z.infer<typeof DashboardOverview>;

/** One global service's backends in one cluster: how many, how many ready, how many some node uses now. */
const ClusterCount = z.object({ cluster: z.string(), backends: z.number().int(), ready: z.number().int(), inUse: z.number().int() });

const ServiceRow = z.object({
  /** namespace/name */
  name: z.string(),
  affinity: z.string(),
  clusters: z.array(ClusterCount),
});
export type ServiceRow = z.infer<typeof ServiceRow>;

export const ServicePage = z.object({
  /** Services matching the search, in all. */
  total: z.number().int(),
  offset: z.number().int(),
  limit: z.number().int(),
  q: z.string(),
  items: z.array(ServiceRow),
  version: z.number().int(),
});
export type ServicePage = z.infer<typeof ServicePage>;

/** What the page carries inline for its first render (the overview and the first page of services). */
export const FirstData = z.object({ overview: DashboardOverview, page: ServicePage });
export type FirstData = z.infer<typeof FirstData>;

const BackendRow = z.object({
  ip: z.string(),
  ports: z.array(z.string()),
  ready: z.boolean(),
  serving: z.boolean(),
  terminating: z.boolean(),
  node: z.string().optional(),
  /** Nodes of this cluster whose agent balances this service over this backend now. */
  usedBy: z.array(z.string()),
});

export const ServiceDetail = z.object({
  name: z.string(),
  affinity: z.string(),
  shared: z.boolean(),
  clusterIps: z.array(z.string()),
  ports: z.array(z.string()),
  clusters: z.array(z.object({ cluster: z.string(), backends: z.array(BackendRow) })),
  /** Per node agent: the frontends of this service it programs and the backends each balances over. */
  nodes: z.array(z.object({ node: z.string(), frontends: z.record(z.string(), z.array(z.string())) })),
  version: z.number().int(),
});
export type ServiceDetail = z.infer<typeof ServiceDetail>;

export const AgentDetail = z.object({
  node: z.string(),
  at: z.string(),
  truncated: z.boolean(),
  frontends: z.array(z.object({ frontend: z.string(), service: z.string().optional(), backends: z.array(z.string()) })),
  failing: z.array(z.object({ frontend: z.string(), reason: z.string(), error: z.string() })),
  ejected: z.array(z.object({ backend: z.string(), until: z.string() })),
  version: z.number().int(),
});
export type AgentDetail = z.infer<typeof AgentDetail>;
