// Prometheus metrics of one apiserver process (its own registry: tests may run several in one process).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { RemoteStatus } from '../mesh/status.js';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'skein_apiserver_' });
  // Read from the sync engine at scrape time (followRemotes), so a disconnected remote's series go with it.
  let remotes: () => RemoteStatus[] = () => [];
  const quotaGauge = (name: string, help: string, pick: (q: NonNullable<RemoteStatus['quota']>) => number) =>
    new Gauge({
      name,
      help,
      labelNames: ['remote'],
      registers: [registry],
      collect() {
        this.reset();
        for (const r of remotes()) if (r.quota) this.set({ remote: r.cluster }, pick(r.quota));
      },
    });
  return {
    registry,
    /** Where the remote quota gauges read from (the sync engine's status). */
    followRemotes: (source: () => RemoteStatus[]) => void (remotes = source),
    remoteCachedKeys: quotaGauge('skein_remote_cached_keys', "A remote's cached keys counted against its quota (--remote-max-keys)", (q) => q.keys),
    remoteCachedBytes: quotaGauge('skein_remote_cached_bytes', "Bytes (key + value) of a remote's cached keys counted against its quota (--remote-max-bytes)", (q) => q.bytes),
    remoteOverQuota: quotaGauge('skein_remote_over_quota', '1 while a remote is over its quota and keys beyond it are refused (reason over-quota)', (q) => (q.overQuota ? 1 : 0)),
    etcdRefusedWrites: new Counter({ name: 'skein_etcd_refused_writes_total', help: 'Export writes refused as too large to ever fit an etcd request (not retried; see skein status)', registers: [registry] }),
    exportedServices: new Gauge({ name: 'skein_exported_services', help: 'Global services exported by this cluster', registers: [registry] }),
    exportedBackends: new Gauge({ name: 'skein_exported_backends', help: 'Backends of exported global services', labelNames: ['ready'], registers: [registry] }),
    exportedIdentities: new Gauge({ name: 'skein_exported_identities', help: 'Security identities exported', registers: [registry] }),
    exportedNodes: new Gauge({ name: 'skein_exported_nodes', help: 'Nodes exported', registers: [registry] }),
    etcdWrite: new Histogram({
      name: 'skein_etcd_write_seconds',
      help: 'Latency of one etcd write transaction of the export',
      buckets: [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
      registers: [registry],
    }),
    etcdErrors: new Counter({ name: 'skein_etcd_errors_total', help: 'Failed etcd operations (retried)', registers: [registry] }),
    watchRestarts: new Counter({ name: 'skein_kube_watch_restarts_total', help: 'Kubernetes watch restarts after an error', labelNames: ['resource'], registers: [registry] }),
    remoteRejectedKeys: new Counter({
      name: 'skein_remote_rejected_keys_total',
      help: 'Keys of a remote cluster export refused before reaching the local cache, by reason',
      labelNames: ['remote', 'reason'],
      registers: [registry],
    }),
    invalidAnnotations: new Counter({ name: 'skein_invalid_annotations_total', help: 'Services refused for a malformed Skein/Cilium annotation', registers: [registry] }),
    identityAllocationFailures: new Counter({
      name: 'skein_identity_allocation_failures_total',
      help: 'Security identity allocations that failed (reason: exhausted = no free local ID, store = mesh etcd error); the pod is retried with backoff',
      labelNames: ['reason'],
      registers: [registry],
    }),
    identityIdsBound: new Gauge({ name: 'skein_identity_ids_bound', help: 'Local security identity IDs bound in the mesh etcd (in use or waiting out --identity-gc-grace)', registers: [registry] }),
    identityIdsCapacity: new Gauge({ name: 'skein_identity_ids_capacity', help: 'Local security identity IDs this cluster can bind', registers: [registry] }),
    identitiesReleased: new Counter({ name: 'skein_identities_released_total', help: 'Security identities released after staying unused for --identity-gc-grace', registers: [registry] }),
    meshEtcdCompactedRevision: new Gauge({ name: 'skein_mesh_etcd_compacted_revision', help: 'The revision this apiserver last compacted the mesh etcd to (0: not yet)', registers: [registry] }),
    meshEtcdDbSize: new Gauge({ name: 'skein_mesh_etcd_db_size_bytes', help: 'Size of the mesh etcd database file (etcd maintenance status dbSize)', registers: [registry] }),
    meshEtcdDbSizeInUse: new Gauge({ name: 'skein_mesh_etcd_db_size_in_use_bytes', help: 'Bytes of the mesh etcd database file in use (dbSizeInUse); the rest is reclaimed by a defrag', registers: [registry] }),
    meshEtcdDefrags: new Counter({ name: 'skein_mesh_etcd_defrags_total', help: 'Defragmentations of the mesh etcd this apiserver ran', registers: [registry] }),
    meshEtcdMaintenanceErrors: new Counter({
      name: 'skein_mesh_etcd_maintenance_errors_total',
      help: 'Failed mesh etcd maintenance steps (step: claim, compact, status, defrag); retried next interval',
      labelNames: ['step'],
      registers: [registry],
    }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
