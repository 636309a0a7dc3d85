// The merged, typed view of global services across the mesh, as one cluster sees it: its own export plus
// every remote's cached copy, all read from the local mesh etcd (agents never talk to other clusters); and
// the cluster's non-global services, which only ever have local backends.
// Values are validated on read; the remote's sync health (stale, synced) comes along so callers can decide.
import type { Etcd3 } from 'etcd3';
import { cachePrefix, exportPrefix, parseExportKey, parseLocalServiceKey, ROOT } from '../apiserver/schema/keys.js';
import { decodeValue, type GlobalService } from '../apiserver/schema/values.js';
import { remoteStatusKey } from './remote-sync.js';

export interface ClusterServiceView {
  cluster: string;
  local: boolean;
  /** The remote's heartbeat went stale: its state is kept but should be trusted less. */
  stale: boolean;
  service: GlobalService;
}

export interface MergedService {
  namespace: string;
  name: string;
  /** False: a non-global service of the local cluster, served from its local backends only. */
  global: boolean;
  /** Affinity as the local cluster declares it (remote declarations do not steer local clients). */
  affinity: GlobalService['affinity'];
  clusters: ClusterServiceView[];
}

export async function mergedGlobalServices(etcd: Etcd3, localCluster: string): Promise<Map<string, MergedService>> {
  const all = await etcd.getAll().prefix(`${ROOT}/`).strings();
  const stale = new Map<string, boolean>();
  for (const [k, v] of Object.entries(all)) {
    const m = /^\/skein\/v1\/sync\/([^/]+)\/status$/.exec(k);
    if (m && remoteStatusKey(m[1]!) === k) stale.set(m[1]!, Boolean((JSON.parse(v) as { stale?: boolean }).stale));
  }
  const merged = new Map<string, MergedService>();
  const localOnly: [string, string][] = [];
  for (const [key, raw] of Object.entries(all)) {
    if (parseLocalServiceKey(key, localCluster)) localOnly.push([key, raw]);
    const local = key.startsWith(exportPrefix(localCluster));
    const parsed = local ? parseExportKey(key, 'export') : key.startsWith(`${ROOT}/cache/`) ? parseExportKey(key, 'cache') : undefined;
    if (parsed?.kind !== 'services') continue;
    if (!local && !key.startsWith(cachePrefix(parsed.cluster))) continue;
    const decoded = decodeValue(parsed, raw);
    if (!decoded.ok) continue;
    const service = decoded.value as GlobalService;
    // A remote's non-shared service contributes no backends to other clusters.
    if (!local && !service.shared) continue;
    const id = `${parsed.namespace}/${parsed.name}`;
    let m = merged.get(id);
    if (!m) merged.set(id, (m = { namespace: parsed.namespace, name: parsed.name, global: true, affinity: 'none', clusters: [] }));
    if (local) m.affinity = service.affinity;
    m.clusters.push({ cluster: parsed.cluster, local, stale: !local && (stale.get(parsed.cluster) ?? false), service });
  }
  for (const [key, raw] of localOnly) {
    const parsed = parseLocalServiceKey(key, localCluster)!;
    const id = `${parsed.namespace}/${parsed.name}`;
    const decoded = decodeValue(parsed, raw);
    // While a service turns global, both keys can exist for a moment: the export wins.
    if (!decoded.ok || merged.get(id)?.clusters.some((c) => c.local)) continue;
    const service = decoded.value as GlobalService;
    merged.set(id, { namespace: service.namespace, name: service.name, global: false, affinity: 'none', clusters: [{ cluster: localCluster, local: true, stale: false, service }] });
  }
  for (const m of merged.values()) m.clusters.sort((a, b) => Number(b.local) - Number(a.local) || a.cluster.localeCompare(b.cluster));
  return merged;
}
