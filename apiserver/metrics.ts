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
    invalidAnnotations: new Counter({ name: 'skein_invalid_annotations_total', help: 'Services refused for a malformed Skein/Cilium annotation', registers: [registry] }),
  };
}
export type Metrics = ReturnType<typeof createMetrics>;
