// Issue 4's benchmark: (1) propagation latency from a backend's readiness flip in cluster A's Kubernetes
// API to cluster B's cache of A (A's EndpointSlice controller, A's export, B's sync); (2) B's initial sync
// of 10,000 remote services with 10 backends each, and B's apiserver memory after it.
import type { KubeConfig } from '@kubernetes/client-node';
import { cachePrefix, keys } from '../../mesh/schema/keys.js';
import { encodeValue, GlobalService } from '../../mesh/schema/values.js';
import { skeinProxyPath } from '../../mesh/service-ref.js';
import type { ApiserverStatus } from '../../mesh/status.js';
import { connect, disconnect } from '../../deploy/cli/connect.js';
import { kubeconfigFor } from '../../deploy/cli/status.js';
import { statePaths } from '../../testbed/state.js';
import { down, up } from '../../testbed/testbed.js';
import { clusterRest, meshEtcd, tempStateDir } from '../tests/helpers.js';
import { distribution, type Result } from './report.js';
import { flipLatency, virtualNode } from './virtual-pods.js';

const A = 'bench-a';
const B = 'bench-b';
const NS = 'bench';

function bulkService(i: number, backends: number): GlobalService {
  return {
    cluster: A,
    namespace: 'bulk',
    name: `svc-${i}`,
    shared: true,
    affinity: 'none',
    clusterIps: [`100.65.${Math.floor(i / 250)}.${(i % 250) + 1}`],
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    backends: Array.from({ length: backends }, (_, b) => ({ ip: `10.43.${128 + Math.floor(i / 100)}.${(i % 100) * 2 + b + 1}`.replace(/\.(\d+)$/, (_m, x) => `.${Number(x) % 254 + 1}`), ports: { http: { port: 8080, protocol: 'TCP' as const } }, ready: true, serving: true, terminating: false, node: 'bench-virtual', zone: 'bench-v' })),
  };
}

export async function meshBench(opts: { changes: number; remoteServices: number; backends: number }): Promise<Result[]> {
  const stateDir = tempStateDir('bench-mesh');
  let heartbeat: NodeJS.Timeout | undefined;
  const clients: { close(): void }[] = [];
  try {
    await up({ stateDir, clusters: [{ name: A, id: 43 }, { name: B, id: 44 }], nodes: 1, echo: false });
    const kc = (c: string): KubeConfig => kubeconfigFor({ kubeconfig: statePaths(stateDir).kubeconfig, context: `skein-${c}` });
    const restA = clusterRest(stateDir, A);
    const etcdA = meshEtcd(stateDir, A);
    const etcdB = meshEtcd(stateDir, B);
    clients.push(etcdA, etcdB);
    await restA.post('/api/v1/namespaces', { metadata: { name: NS } });
    // Every address the bench exports lies in the virtual node's pod CIDR: B accepts only A's pinned CIDRs.
    heartbeat = await virtualNode(restA, '10.43.128.0/17');
    await connect(kc(A), kc(B), () => {});
    const flips = await flipLatency({ rest: restA, etcd: etcdB, key: `${cachePrefix(A)}services/${NS}/flip`, ns: NS, ip: '10.43.128.2', changes: opts.changes });
    const results: Result[] = [distribution('propagation: readiness flip in A -> B cache', 'ms', flips, 'A: EndpointSlice controller + export; B: sync')];

    // Initial sync: put N services straight into A's export (the sync is what is measured), then connect B.
    await disconnect(kc(A), kc(B), () => {});
    for (let i = 0; i < opts.remoteServices; i += 128) {
      const ops = Array.from({ length: Math.min(128, opts.remoteServices - i) }, (_, j) => etcdA.put(keys.service(A, 'bulk', `svc-${i + j}`)).value(encodeValue(GlobalService, bulkService(i + j, opts.backends))));
      await etcdA.if(keys.config(A), 'Version', '>', -1).then(...ops).commit();
    }
    const t0 = performance.now();
    await connect(kc(A), kc(B), () => {}, 300_000);
    const syncMs = performance.now() - t0;
    const statusB = await clusterRest(stateDir, B).get<ApiserverStatus>(skeinProxyPath('/v1/status'));
    const remoteA = statusB.remotes.find((r) => r.cluster === A)!;
    if (remoteA.services < opts.remoteServices) throw new Error(`B cached ${remoteA.services} services of A, expected ${opts.remoteServices}`);
    results.push(
      { name: `initial sync: ${opts.remoteServices} remote services x ${opts.backends} backends (connect -> synced)`, unit: 'ms', value: Math.round(syncMs), note: `${remoteA.services} services cached` },
      { name: 'initial sync: B apiserver RSS after sync', unit: 'MiB', value: Math.round(statusB.rssBytes / 1048576) },
    );
    return results;
  } finally {
    if (heartbeat) clearInterval(heartbeat);
    for (const c of clients) c.close();
    await down(stateDir);
  }
}
