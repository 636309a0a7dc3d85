// The mesh etcd key schema, version 1. A cluster exports under its own prefix; remote clusters' copies live
// under the cache prefix of the importing cluster. Remote users are granted read access to one export
// prefix only, so everything a cluster publishes must stay below it.
//
//   /skein/v1/export/<cluster>/config
//   /skein/v1/export/<cluster>/bundle                         (its trust bundle, for peers: a rotation reaches them here)
//   /skein/v1/export/<cluster>/heartbeat                      (on the exporter's lease)
//   /skein/v1/export/<cluster>/synced/<kind>                  (on the exporter's lease)
//   /skein/v1/export/<cluster>/services/<namespace>/<name>
//   /skein/v1/export/<cluster>/identities/<id>
//   /skein/v1/export/<cluster>/ips/<ip>
//   /skein/v1/export/<cluster>/nodes/<name>
//   /skein/v1/local/<cluster>/identity-index/<sha256 of labels>   (allocation bookkeeping, not exported)
//   /skein/v1/local/<cluster>/identity-ids/<local id>
//   /skein/v1/local/<cluster>/services/<namespace>/<name>     (non-global services, for this cluster's agents only)
//   /skein/v1/local/<cluster>/agents/<node>                   (each node agent's view: counts, failures, ejections; on its lease)
//   /skein/v1/local/<cluster>/agent-frontends/<node>/<shard>  (its programmed frontends by hash shard, on the same lease)
//   /skein/v1/local/<cluster>/bundles/<trust domain>          (trust bundles agents serve: own + connected peers')
//   /skein/v1/local/<cluster>/node-ca                         (where agents ask for workload SVIDs)
//   /skein/v1/local/<cluster>/compact-revision                (which apiserver compacts next, and to where)
//   /skein/v1/cache/<remote>/...                               (sync/: the remote's export, mirrored)
//   /skein/v1/sync/<remote>/status                            (sync/: the remote's health, for agents)
//   /skein/v1/credentials/<issuer>/<peer>                     (a peer's renewed read identity, that peer only)
const SCHEMA_VERSION = 'v1';
export const ROOT = `/skein/${SCHEMA_VERSION}`;

export const EXPORT_KINDS = ['services', 'identities', 'ips', 'nodes'] as const;
export type ExportKind = (typeof EXPORT_KINDS)[number];

export const exportPrefix = (cluster: string) => `${ROOT}/export/${cluster}/`;
export const cachePrefix = (remote: string) => `${ROOT}/cache/${remote}/`;
const localPrefix = (cluster: string) => `${ROOT}/local/${cluster}/`;

/** Where every remote's cached export lives, and the sync engine's per-remote health. */
export const CACHE_ROOT = `${ROOT}/cache/`;
const SYNC_STATUS_ROOT = `${ROOT}/sync/`;

export const keys = {
  config: (c: string) => `${exportPrefix(c)}config`,
  /** The cluster's own trust bundle as it exports it to peers (their sync serves it to their agents). */
  exportedBundle: (c: string) => `${exportPrefix(c)}bundle`,
  heartbeat: (c: string) => `${exportPrefix(c)}heartbeat`,
  synced: (c: string, kind: ExportKind) => `${exportPrefix(c)}synced/${kind}`,
  service: (c: string, namespace: string, name: string) => `${exportPrefix(c)}services/${namespace}/${name}`,
  identity: (c: string, id: number) => `${exportPrefix(c)}identities/${id}`,
  ip: (c: string, ip: string) => `${exportPrefix(c)}ips/${ip}`,
  node: (c: string, name: string) => `${exportPrefix(c)}nodes/${name}`,
  identityIndex: (c: string, labelsHash: string) => `${localPrefix(c)}identity-index/${labelsHash}`,
  identityId: (c: string, localId: number) => `${localPrefix(c)}identity-ids/${localId}`,
  kindPrefix: (c: string, kind: ExportKind) => `${exportPrefix(c)}${kind}/`,
  localService: (c: string, namespace: string, name: string) => `${localPrefix(c)}services/${namespace}/${name}`,
  localServicesPrefix: (c: string) => `${localPrefix(c)}services/`,
  agent: (c: string, node: string) => `${localPrefix(c)}agents/${node}`,
  agentsPrefix: (c: string) => `${localPrefix(c)}agents/`,
  /** One shard of a node agent's programmed frontends (mesh/agent-view.ts). */
  agentFrontends: (c: string, node: string, shard: number) => `${localPrefix(c)}agent-frontends/${node}/${shard}`,
  /** A node's shards; `node` undefined: every node's. */
  agentFrontendsPrefix: (c: string, node?: string) => `${localPrefix(c)}agent-frontends/${node === undefined ? '' : `${node}/`}`,
  bundle: (c: string, trustDomain: string) => `${localPrefix(c)}bundles/${trustDomain}`,
  bundlesPrefix: (c: string) => `${localPrefix(c)}bundles/`,
  nodeCa: (c: string) => `${localPrefix(c)}node-ca`,
  /** Its version is the compactors' logical clock (apiserver/mesh-maintenance.ts); read by no peer or agent. */
  compactRevision: (c: string) => `${localPrefix(c)}compact-revision`,
  /** A remote's sync health as this cluster's apiserver sees it (what agents act on). */
  syncStatus: (remote: string) => `${SYNC_STATUS_ROOT}${remote}/status`,
  /** A peer's renewed read identity, issued by `issuer`, readable by that peer alone. */
  credential: (issuer: string, peer: string) => `${ROOT}/credentials/${issuer}/${peer}`,
};

/** The node and shard of an agent-frontends key in `cluster`'s local prefix, or undefined. */
export function parseAgentFrontendsKey(key: string, cluster: string): { node: string; shard: number } | undefined {
  const head = keys.agentFrontendsPrefix(cluster);
  if (!key.startsWith(head)) return undefined;
  const [node, shard, ...rest] = key.slice(head.length).split('/');
  return node && shard && /^(0|[1-9]\d{0,3})$/.test(shard) && rest.length === 0 ? { node, shard: Number(shard) } : undefined;
}

/** The remote a sync status key is about, or undefined. */
export function parseSyncStatusKey(key: string): string | undefined {
  if (!key.startsWith(SYNC_STATUS_ROOT)) return undefined;
  const [remote, leaf, ...rest] = key.slice(SYNC_STATUS_ROOT.length).split('/');
  return remote && leaf === 'status' && rest.length === 0 ? remote : undefined;
}

/**
 * The prefixes a node agent's datapath follows (the merged view): its cluster's exported and local-only
 * services, every remote's cached export and the remotes' sync health. Its etcd role grants reads of these,
 * the trust bundles and the node CA endpoint — nothing else (no credentials, no allocation bookkeeping).
 */
export const datapathPrefixes = (cluster: string) => [keys.kindPrefix(cluster, 'services'), keys.localServicesPrefix(cluster), CACHE_ROOT, SYNC_STATUS_ROOT];

/** A non-global service's key in `cluster`'s local prefix, parsed like an exported one; else undefined. */
export function parseLocalServiceKey(key: string, cluster: string): Extract<ParsedKey, { kind: 'services' }> | undefined {
  const head = keys.localServicesPrefix(cluster);
  if (!key.startsWith(head)) return undefined;
  const [namespace, name, ...rest] = key.slice(head.length).split('/');
  return namespace && name && rest.length === 0 ? { kind: 'services', cluster, namespace, name } : undefined;
}

export type ParsedKey =
  | { kind: 'config' | 'heartbeat' | 'bundle'; cluster: string }
  | { kind: 'synced'; cluster: string; of: string }
  | { kind: 'services'; cluster: string; namespace: string; name: string }
  | { kind: 'identities' | 'ips' | 'nodes'; cluster: string; id: string };

/** Parses a key below `<prefix><cluster>/` (an export or a cache prefix); undefined if it is not one. */
export function parseExportKey(key: string, base: 'export' | 'cache' = 'export'): ParsedKey | undefined {
  const head = `${ROOT}/${base}/`;
  if (!key.startsWith(head)) return undefined;
  const parts = key.slice(head.length).split('/');
  const [cluster, kind, a, b] = parts;
  if (!cluster || !kind) return undefined;
  if ((kind === 'config' || kind === 'heartbeat' || kind === 'bundle') && parts.length === 2) return { kind, cluster };
  if (kind === 'synced' && parts.length === 3 && a) return { kind, cluster, of: a };
  if (kind === 'services' && parts.length === 4 && a && b) return { kind, cluster, namespace: a, name: b };
  if ((kind === 'identities' || kind === 'ips' || kind === 'nodes') && parts.length === 3 && a) return { kind, cluster, id: a };
  return undefined;
}
