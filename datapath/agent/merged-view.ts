// The merged, typed view of services across the mesh, as one cluster sees it: its own export plus every
// remote's cached copy, all from the local mesh etcd (agents never talk to other clusters), and the
// cluster's non-global services, which only ever have local backends. Values are validated as they are
// applied; the remote's sync health (stale) comes along so callers can decide.
//
// Incremental: `MergedView.apply` takes one key at a time (a listing, then a watch) and says which services
// it touched, so a node agent recomputes only those — a full read of the mesh prefix per change does not
// scale (at 10,000 remote services × 10 backends one read is 14 MB, over gRPC's 4 MiB message limit).
import type { Etcd3 } from 'etcd3';
import { listPrefixes } from '../../mesh/etcd.js';
import { datapathPrefixes, parseExportKey, parseLocalServiceKey, parseSyncStatusKey, ROOT } from '../../mesh/schema/keys.js';
import { decodeJson, decodeValue, SyncStatus, type GlobalService, type MeshNode } from '../../mesh/schema/values.js';

interface ClusterServiceView {
  cluster: string;
  local: boolean;
  /** No live sync vouches for the remote's cache (see MergedView.fresh): kept, but trusted less. */
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
  /** Spillover below this many ready local backends (`skein.io/local-min-ready`), as the local cluster declares it. */
  localMinReady?: GlobalService['localMinReady'];
  clusters: ClusterServiceView[];
}

type Source = 'export' | 'cache' | 'local-only';
interface Entry {
  source: Source;
  cluster: string;
  service: GlobalService;
}

export class MergedView {
  /** Service id (namespace/name) → key → what that key holds. */
  private readonly byService = new Map<string, Map<string, Entry>>();
  /** Where each key went, so a delete finds it. */
  private readonly idOfKey = new Map<string, string>();
  /** Remote → the ids it has cached entries for (a stale flip touches exactly those). */
  private readonly byRemote = new Map<string, Set<string>>();
  /**
   * Remotes whose cache a live sync vouches for: a readable status that says synced and not stale. Anything
   * else is stale: a missing status (the importer is dead and its lease expired, or stopped, or was never
   * there), an unreadable one, or one not synced yet (a restarted importer has not confirmed the cache it
   * inherited). Stale only orders backends (policy.ts: used when no fresh cluster has a ready one), it never
   * drops them, so a brand-new remote whose cache lands a moment before its status is not blackholed: its
   * backends lose only against fresh ready ones until the status follows (right after the first listing).
   */
  private readonly fresh = new Set<string>();

  /** Remote clusters' nodes by cache key: where their pod CIDRs are reached (peer-routes.ts). */
  private readonly nodes = new Map<string, MeshNode>();
  /** Moves whenever `remoteNodes()` changes. */
  nodesVersion = 0;

  constructor(readonly localCluster: string) {}

  /** Applies one key's value (undefined: deleted). Returns the ids of the services it may have changed. */
  apply(key: string, raw: string | undefined): string[] {
    const remote = parseSyncStatusKey(key);
    if (remote) return this.applyStatus(remote, raw);
    if (this.applyNode(key, raw)) return [];
    const located = this.locate(key);
    if (!located) return [];
    const { id, source, parsed } = located;
    const previous = this.idOfKey.get(key);
    if (raw === undefined) return this.remove(key) ? [previous!] : [];
    const decoded = decodeValue(parsed, raw);
    // An invalid value never reaches a datapath.
    if (!decoded.ok || decoded.kind !== 'services') return this.remove(key) ? [previous!] : [];
    const service = decoded.value;
    let entries = this.byService.get(id);
    if (!entries) this.byService.set(id, (entries = new Map<string, Entry>()));
    entries.set(key, { source, cluster: parsed.cluster, service });
    this.idOfKey.set(key, id);
    if (source === 'cache') {
      let ids = this.byRemote.get(parsed.cluster);
      if (!ids) this.byRemote.set(parsed.cluster, (ids = new Set()));
      ids.add(id);
    }
    return [id];
  }

  /** True when the key is a remote's node (applied or, invalid, dropped). */
  private applyNode(key: string, raw: string | undefined): boolean {
    if (!key.startsWith(`${ROOT}/cache/`)) return false;
    const parsed = parseExportKey(key, 'cache');
    if (parsed?.kind !== 'nodes' || parsed.cluster === this.localCluster) return false;
    const decoded = raw === undefined ? undefined : decodeValue(parsed, raw);
    if (decoded?.ok && decoded.kind === 'nodes' && decoded.value.cluster === parsed.cluster) {
      const before = this.nodes.get(key);
      if (before && JSON.stringify(before) === JSON.stringify(decoded.value)) return true;
      this.nodes.set(key, decoded.value);
      this.nodesVersion++;
    } else if (this.nodes.delete(key)) {
      this.nodesVersion++;
    }
    return true;
  }

  /** Every remote cluster's nodes as cached now. */
  remoteNodes(): MeshNode[] {
    return [...this.nodes.values()];
  }

  private applyStatus(remote: string, raw: string | undefined): string[] {
    const status = raw === undefined ? undefined : decodeJson(SyncStatus, raw);
    const fresh = status?.synced === true && !status.stale;
    if (this.fresh.has(remote) === fresh) return [];
    if (fresh) this.fresh.add(remote);
    else this.fresh.delete(remote);
    return [...(this.byRemote.get(remote) ?? [])];
  }

  private locate(key: string): { id: string; source: Source; parsed: Extract<NonNullable<ReturnType<typeof parseExportKey>>, { kind: 'services' }> } | undefined {
    const local = parseLocalServiceKey(key, this.localCluster);
    if (local) return { id: `${local.namespace}/${local.name}`, source: 'local-only', parsed: local };
    const base = key.startsWith(`${ROOT}/export/`) ? 'export' : key.startsWith(`${ROOT}/cache/`) ? 'cache' : undefined;
    if (!base) return undefined;
    const parsed = parseExportKey(key, base);
    if (parsed?.kind !== 'services') return undefined;
    // Only our own export counts as local; other clusters count only through their cache.
    if (base === 'export' && parsed.cluster !== this.localCluster) return undefined;
    if (base === 'cache' && parsed.cluster === this.localCluster) return undefined;
    return { id: `${parsed.namespace}/${parsed.name}`, source: base, parsed };
  }

  private remove(key: string): boolean {
    const id = this.idOfKey.get(key);
    if (id === undefined) return false;
    this.idOfKey.delete(key);
    const entries = this.byService.get(id);
    const entry = entries?.get(key);
    entries?.delete(key);
    if (entries?.size === 0) this.byService.delete(id);
    if (entry?.source === 'cache' && ![...(entries?.values() ?? [])].some((e) => e.source === 'cache' && e.cluster === entry.cluster)) this.byRemote.get(entry.cluster)?.delete(id);
    return true;
  }

  ids(): string[] {
    return [...this.byService.keys()];
  }

  /** The merged service now, or undefined when no cluster has it any more. */
  get(id: string): MergedService | undefined {
    const entries = [...(this.byService.get(id)?.values() ?? [])];
    const exported = entries.find((e) => e.source === 'export');
    const [namespace, name] = id.split('/') as [string, string];
    if (!exported) {
      // While a service turns global both keys can exist for a moment: the export wins (above).
      const only = entries.find((e) => e.source === 'local-only');
      if (only) return { namespace, name, global: false, affinity: 'none', clusters: [{ cluster: this.localCluster, local: true, stale: false, service: only.service }] };
    }
    // A remote's non-shared service contributes no backends to other clusters.
    const remotes = entries.filter((e) => e.source === 'cache' && e.service.shared);
    if (!exported && remotes.length === 0) return undefined;
    const clusters: ClusterServiceView[] = [
      ...(exported ? [{ cluster: this.localCluster, local: true, stale: false, service: exported.service }] : []),
      ...remotes.map((e) => ({ cluster: e.cluster, local: false, stale: !this.fresh.has(e.cluster), service: e.service })).sort((a, b) => a.cluster.localeCompare(b.cluster)),
    ];
    const localMinReady = exported?.service.localMinReady;
    return { namespace, name, global: true, affinity: exported?.service.affinity ?? 'none', ...(localMinReady ? { localMinReady } : {}), clusters };
  }
}

/** A consistent snapshot of the datapath's prefixes (paginated) applied to a new view, and its revision. */
export async function loadMergedView(etcd: Etcd3, localCluster: string): Promise<{ view: MergedView; revision: number }> {
  const { kvs, revision } = await listPrefixes(etcd, datapathPrefixes(localCluster));
  const view = new MergedView(localCluster);
  for (const kv of kvs) view.apply(kv.key.toString(), kv.value.toString());
  return { view, revision };
}

/** Every merged service at once (status, tests). */
export async function mergedGlobalServices(etcd: Etcd3, localCluster: string): Promise<Map<string, MergedService>> {
  const { view } = await loadMergedView(etcd, localCluster);
  const out = new Map<string, MergedService>();
  for (const id of view.ids()) {
    const m = view.get(id);
    if (m) out.set(id, m);
  }
  return out;
}
