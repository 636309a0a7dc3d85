// Issue 3's benchmark: (1) export latency from a pod turning (un)ready in the Kubernetes API to its backend
// flipping in the mesh etcd, through the real EndpointSlice controller and skein-apiserver; (2) the cold
// export of 1,000 global services with 10 backends each. Pods live on a "virtual" node (a Node object with
// no runner) whose status the benchmark sets itself, as a kubelet would, so it controls readiness exactly.
import type { Etcd3 } from 'etcd3';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { exportPrefix, keys } from '../../mesh/schema/keys.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import type { ExportStatus } from '../../mesh/status.js';
import { waitFor } from '../../testbed/daemon.js';
import { clusterRest, meshEtcd, tempStateDir } from '../tests/helpers.js';
import { down, up } from '../../testbed/testbed.js';
import { distribution, type Result } from './report.js';
import { flipLatency, pool, virtualNode, VNODE } from './virtual-pods.js';

const CLUSTER = 'bench';
const NS = 'bench';

async function coldExport(rest: KubeRest, etcd: Etcd3, services: number, backends: number): Promise<Result[]> {
  const names = Array.from({ length: services }, (_, i) => `svc-${i}`);
  const t0 = performance.now();
  await pool(names, 16, async (name) => {
    const i = Number(name.slice(4));
    await rest.post(`/api/v1/namespaces/${NS}/services`, { metadata: { name, annotations: { 'skein.io/global': 'true' } }, spec: { ports: [{ name: 'http', port: 80 }] } });
    await rest.post(`/apis/discovery.k8s.io/v1/namespaces/${NS}/endpointslices`, {
      metadata: { name: `${name}-1`, labels: { 'kubernetes.io/service-name': name, 'endpointslice.kubernetes.io/managed-by': 'skein-bench' } },
      addressType: 'IPv4',
      ports: [{ name: 'http', port: 8080, protocol: 'TCP' }],
      endpoints: Array.from({ length: backends }, (_, b) => ({ addresses: [`10.${100 + Math.floor(i / 250)}.${i % 250}.${b + 1}`], conditions: { ready: true }, nodeName: VNODE, zone: 'bench-v' })),
    });
  });
  const createMs = performance.now() - t0;
  // Cold start: stop the exporter, empty its export prefix, start it and time its initial sync.
  const deploy = '/apis/apps/v1/namespaces/skein-system/deployments/skein-apiserver/scale';
  await rest.patch(deploy, { spec: { replicas: 0 } });
  await waitFor('skein-apiserver stopped', async () => ((await rest.get<{ items: unknown[] }>('/api/v1/namespaces/skein-system/pods')).items.length === 0 ? true : undefined), 60_000);
  await etcd.delete().prefix(exportPrefix(CLUSTER));
  const t1 = performance.now();
  await rest.patch(deploy, { spec: { replicas: 1 } });
  const status = await waitFor(
    'cold export synced',
    async () => {
      const s = await rest.get<ExportStatus>(skeinProxyPath('/v1/status'));
      return s.synced ? s : undefined;
    },
    300_000,
  );
  const wallMs = performance.now() - t1;
  const exported = (await etcd.getAll().prefix(keys.kindPrefix(CLUSTER, 'services')).keys()).length;
  if (exported < services) throw new Error(`cold export wrote ${exported} services, expected at least ${services}`);
  return [
    { name: `cold export: ${services} services x ${backends} backends (process start -> synced)`, unit: 'ms', value: status.initialSyncMs ?? NaN, note: `${exported} service keys; ${status.etcd.writes} etcd writes` },
    { name: 'cold export: scale-up -> ready (incl. pod start)', unit: 'ms', value: Math.round(wallMs) },
    { name: 'cold export: apiserver RSS after sync', unit: 'MiB', value: Math.round(status.rssBytes / 1048576) },
    { name: `setup: create ${services} services + slices via API`, unit: 'ms', value: Math.round(createMs) },
  ];
}

export async function exportBench(opts: { changes: number; services: number; backends: number }): Promise<Result[]> {
  const stateDir = tempStateDir('bench-export');
  let heartbeat: NodeJS.Timeout | undefined;
  let etcd: Etcd3 | undefined;
  try {
    await up({ stateDir, clusters: [{ name: CLUSTER, id: 41 }], nodes: 1, echo: false });
    const rest = clusterRest(stateDir, CLUSTER);
      etcd = meshEtcd(stateDir, CLUSTER);
    await rest.post('/api/v1/namespaces', { metadata: { name: NS } });
    heartbeat = await virtualNode(rest, '10.41.99.0/24');
    const flips = await flipLatency({ rest, etcd, key: keys.service(CLUSTER, NS, 'flip'), ns: NS, ip: '10.41.99.2', changes: opts.changes });
    const results: Result[] = [distribution('export latency: pod readiness flip -> mesh etcd', 'ms', flips, 'via the real EndpointSlice controller')];
    results.push(...(await coldExport(rest, etcd, opts.services, opts.backends)));
    return results;
  } finally {
    if (heartbeat) clearInterval(heartbeat);
    etcd?.close();
    await down(stateDir);
  }
}
