// The dashboard's JSON views (mesh/dashboard.ts), computed from the status `skein status` reads and the
// catalog. Pure functions of their inputs: a page of services computes only its own rows.
import type { AgentDetail, DashboardLink, DashboardOverview, LinkState, ServiceDetail, ServicePage, ServiceRow } from '../../mesh/dashboard.js';
import type { ApiserverStatus, RemoteStatus } from '../../mesh/status.js';
import type { GlobalService } from '../../mesh/schema/values.js';
import type { Catalog } from './catalog.js';

/** What the dashboard takes from /v1/status: everything but the agents, which it follows itself. */
export type StatusCore = Omit<ApiserverStatus, 'agents'>;

function linkState(r: RemoteStatus): LinkState {
  if (!r.connected) return 'disconnected';
  if (r.quota?.overQuota) return 'over-quota';
  if (!r.synced) return 'syncing';
  return r.stale ? 'stale' : 'synced';
}

function link(r: RemoteStatus): DashboardLink {
  return {
    cluster: r.cluster,
    id: r.id,
    state: linkState(r),
    connected: r.connected,
    synced: r.synced,
    stale: r.stale,
    revisionLag: r.revisionLag,
    services: r.services,
    rejected: r.rejected,
    ...(r.lastHeartbeat ? { lastHeartbeat: r.lastHeartbeat } : {}),
    ...(r.quota ? { quota: { keys: r.quota.keys, maxKeys: r.quota.maxKeys, bytes: r.quota.bytes, maxBytes: r.quota.maxBytes, refusedKeys: r.quota.refusedKeys } } : {}),
    ...(r.identityExpires ? { identityExpires: r.identityExpires } : {}),
    ...(r.lastError ? { lastError: r.lastError } : {}),
  };
}

/** The link states only (no heartbeat times): a change here is worth telling the browsers about. */
export const linksFingerprint = (s: StatusCore) => JSON.stringify([s.synced, s.nodes, s.identities, s.remotes.map((r) => ({ ...link(r), lastHeartbeat: undefined }))]);

export function overview(s: StatusCore, c: Catalog, version: number): DashboardOverview {
  return {
    cluster: s.cluster,
    clusterId: s.clusterId,
    synced: s.synced,
    ...(s.trustDomain ? { trustDomain: s.trustDomain } : {}),
    ...(s.meshIdentity ? { meshIdentityExpires: s.meshIdentity.expires } : {}),
    services: c.services.size,
    nodes: s.nodes,
    identities: s.identities,
    links: s.remotes.map(link),
    agents: c.agents
      .nodes()
      .flatMap((n) => c.agents.header(n) ?? [])
      .map((a) => ({ node: a.node, at: a.at, frontends: a.frontends, backends: a.backends, failures: a.failures ?? Object.keys(a.failing ?? {}).length, ejected: a.ejectedCount ?? a.ejected?.length ?? 0 })),
    bundles: [...c.bundles.values()].sort((a, b) => Number(b.own) - Number(a.own) || a.trustDomain.localeCompare(b.trustDomain)),
    version,
  };
}

/** A service's frontends as agents name them: PROTO/clusterIP:port. */
const frontendsOf = (svc: GlobalService) => svc.clusterIps.flatMap((ip) => svc.ports.map((p) => `${p.protocol}/${ip}:${p.port}`));
const ipOf = (addr: string) => addr.slice(0, addr.lastIndexOf(':'));

/** Backend IP → the nodes balancing this service over it now (the catalog's index of the agents' shards). */
function usersOf(c: Catalog, svc: GlobalService): Map<string, string[]> {
  const users = new Map<string, Set<string>>();
  for (const f of frontendsOf(svc)) {
    for (const [node, backends] of c.agents.usersOf(f)) for (const b of backends) (users.get(ipOf(b)) ?? users.set(ipOf(b), new Set()).get(ipOf(b))!).add(node);
  }
  return new Map([...users].map(([ip, nodes]) => [ip, [...nodes].sort()]));
}

/** A node's frontends listed on its page: all of them would be 10,000 rows at 10,000 services. */
const AGENT_DETAIL_MAX = 500;

/** The local cluster first, then the remotes by name. */
function clustersOf(byCluster: Map<string, GlobalService>, local: string): GlobalService[] {
  return [...byCluster.values()].sort((a, b) => Number(b.cluster === local) - Number(a.cluster === local) || a.cluster.localeCompare(b.cluster));
}

export interface PageQuery {
  offset: number;
  limit: number;
  q: string;
}

export class DashboardViews {
  constructor(
    private readonly c: Catalog,
    private readonly local: string,
  ) {}

  /** The representative export: the local cluster's when it has one (its settings rule here). */
  private main(byCluster: Map<string, GlobalService>): GlobalService {
    return byCluster.get(this.local) ?? clustersOf(byCluster, this.local)[0]!;
  }

  page(query: PageQuery, version: number): ServicePage {
    const needle = query.q.toLowerCase();
    const names = needle ? this.c.names().filter((n) => n.toLowerCase().includes(needle)) : this.c.names();
    const items = names.slice(query.offset, query.offset + query.limit).map((name) => this.row(name));
    return { total: names.length, offset: query.offset, limit: query.limit, q: query.q, items, version };
  }

  private row(name: string): ServiceRow {
    const byCluster = this.c.services.get(name)!;
    const main = this.main(byCluster);
    const users = usersOf(this.c, main);
    return {
      name,
      affinity: main.affinity,
      clusters: clustersOf(byCluster, this.local).map((s) => ({
        cluster: s.cluster,
        backends: s.backends.length,
        ready: s.backends.filter((b) => b.ready).length,
        inUse: s.backends.filter((b) => users.has(b.ip)).length,
      })),
    };
  }

  detail(name: string, version: number): ServiceDetail | undefined {
    const byCluster = this.c.services.get(name);
    if (!byCluster) return undefined;
    const main = this.main(byCluster);
    const users = usersOf(this.c, main);
    const frontends = frontendsOf(main);
    return {
      name,
      affinity: main.affinity,
      shared: main.shared,
      clusterIps: main.clusterIps,
      ports: main.ports.map((p) => `${p.name || '-'} ${p.port}/${p.protocol}`),
      clusters: clustersOf(byCluster, this.local).map((s) => ({
        cluster: s.cluster,
        backends: s.backends.map((b) => ({
          ip: b.ip,
          ports: Object.entries(b.ports).map(([n, p]) => `${n || '-'} ${p.port}/${p.protocol}`),
          ready: b.ready,
          serving: b.serving,
          terminating: b.terminating,
          ...(b.node ? { node: b.node } : {}),
          usedBy: users.get(b.ip) ?? [],
        })),
      })),
      nodes: this.c.agents.nodes().map((node) => ({
        node,
        frontends: Object.fromEntries([...frontends].flatMap((f) => this.c.agents.usersOf(f).flatMap(([n, backends]) => (n === node ? [[f, [...backends]]] : [])))),
      })),
      version,
    };
  }

  agent(node: string, version: number): AgentDetail | undefined {
    const a = this.c.agents.view(node, AGENT_DETAIL_MAX);
    if (!a) return undefined;
    const serviceOf = new Map<string, string>();
    for (const [name, byCluster] of this.c.services) for (const f of frontendsOf(this.main(byCluster))) serviceOf.set(f, name);
    return {
      node: a.node,
      at: a.at,
      truncated: a.truncated,
      frontends: Object.entries(a.programmed).map(([frontend, backends]) => ({ frontend, backends, ...(serviceOf.has(frontend) ? { service: serviceOf.get(frontend)! } : {}) })),
      failing: Object.entries(a.failing ?? {}).map(([frontend, f]) => ({ frontend, reason: f.reason, error: f.error })),
      ejected: (a.ejected ?? []).map((e) => ({ backend: e.backend, until: e.until })),
      version,
    };
  }
}
