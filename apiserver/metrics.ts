// Prometheus metrics of one apiserver process (its own registry: tests may run several in one process).
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

export function createMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'skein_apiserver_' });
  return {
    registry,
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
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
