// Issue 3's benchmark: (1) export latency from a pod turning (un)ready in the Kubernetes API to its backend
// flipping in the mesh etcd, through the real EndpointSlice controller and skein-apiserver; (2) the cold
// export of 1,000 global services with 10 backends each. Pods live on a "virtual" node (a Node object with
// no runner) whose status the benchmark sets itself, as a kubelet would, so it controls readiness exactly.
import type { Etcd3 } from 'etcd3';
import type { KubeRest } from '../../apiserver/kube/rest.js';
import { exportPrefix, keys } from '../../apiserver/schema/keys.js';
import { GlobalService } from '../../apiserver/schema/values.js';
import { skeinProxyPath } from '../../apiserver/service-ref.js';
import type { ExportStatus } from '../../apiserver/export/exporter.js';
import { waitFor } from '../testbed/daemon.js';
import { clusterRest, meshEtcd, tempStateDir } from '../tests/helpers.js';
import { down, up } from '../testbed/testbed.js';
import { distribution, type Result } from './report.js';

const CLUSTER = 'bench';
const NS = 'bench';
const VNODE = 'bench-virtual';

async function pool<T>(items: T[], concurrency: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(Array.from({ length: concurrency }, async () => {
    while (i < items.length) await fn(items[i++]!);
  }));
}

function readyStatus(ip: string, ready: boolean) {
  const at = new Date().toISOString();
  const c = (type: string, ok: boolean) => ({ type, status: ok ? 'True' : 'False', lastTransitionTime: at });
  return {
    status: {
      phase: 'Running',
      podIP: ip,
      podIPs: [{ ip }],
      hostIP: '10.41.0.99',
      conditions: [c('PodScheduled', true), c('Initialized', true), c('ContainersReady', ready), c('Ready', ready)],
    },
  };
}

async function virtualNode(rest: KubeRest): Promise<NodeJS.Timeout> {
  await rest.post('/api/v1/nodes', { metadata: { name: VNODE, labels: { 'topology.kubernetes.io/zone': 'bench-v' } }, spec: { podCIDR: '10.41.99.0/24', podCIDRs: ['10.41.99.0/24'] } });
  const beat = () =>
    rest.patch(`/api/v1/nodes/${VNODE}/status`, { status: { conditions: [{ type: 'Ready', status: 'True', reason: 'Bench', lastHeartbeatTime: new Date().toISOString(), lastTransitionTime: new Date().toISOString() }], addresses: [{ type: 'InternalIP', address: '10.41.0.99' }] } }, 'strategic');
  await beat();
  return setInterval(() => void beat().catch(() => {}), 10_000);
}

async function flipLatency(rest: KubeRest, etcd: Etcd3, changes: number): Promise<number[]> {
  const ip = '10.41.99.2';
  await rest.post(`/api/v1/namespaces/${NS}/pods`, { metadata: { name: 'flip', labels: { app: 'flip' } }, spec: { nodeName: VNODE, containers: [{ name: 'c', image: 'skein-echo' }] } });
  await rest.patch(`/api/v1/namespaces/${NS}/pods/flip/status`, readyStatus(ip, true), 'strategic');
  await rest.post(`/api/v1/namespaces/${NS}/services`, { metadata: { name: 'flip', annotations: { 'skein.io/global': 'true' } }, spec: { selector: { app: 'flip' }, ports: [{ name: 'http', port: 80 }] } });
  const key = keys.service(CLUSTER, NS, 'flip');
  const readyInEtcd = async () => {
    const raw = await etcd.get(key).string();
    return raw ? GlobalService.parse(JSON.parse(raw)).backends[0]?.ready : undefined;
  };
  await waitFor('flip exported ready', async () => ((await readyInEtcd()) === true ? true : undefined), 60_000);

  const watcher = await etcd.watch().key(key).create();
  let expect: boolean | undefined;
  let resolveFlip: (() => void) | undefined;
  watcher.on('put', (kv) => {
    const ready = GlobalService.parse(JSON.parse(kv.value.toString())).backends[0]?.ready;
    if (ready === expect) resolveFlip?.();
  });
  const samples: number[] = [];
  let ready = true;
  for (let i = 0; i < changes; i++) {
    ready = !ready;
    expect = ready;
    const seen = new Promise<void>((r) => (resolveFlip = r));
    const t0 = performance.now();
    await rest.patch(`/api/v1/namespaces/${NS}/pods/flip/status`, readyStatus(ip, ready), 'strategic');
    await Promise.race([seen, new Promise((_, rej) => setTimeout(() => rej(new Error(`flip ${i} not exported within 10 s`)), 10_000))]);
    samples.push(performance.now() - t0);
  }
  await watcher.cancel();
  return samples;
}

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
    const state = await up({ stateDir, clusters: [{ name: CLUSTER, id: 41 }], nodes: 1, echo: false });
    const rest = clusterRest(stateDir, CLUSTER);
    void state;
    etcd = meshEtcd(stateDir, CLUSTER);
    await rest.post('/api/v1/namespaces', { metadata: { name: NS } });
    heartbeat = await virtualNode(rest);
    const flips = await flipLatency(rest, etcd, opts.changes);
    const results: Result[] = [distribution('export latency: pod readiness flip -> mesh etcd', 'ms', flips, 'via the real EndpointSlice controller')];
    results.push(...(await coldExport(rest, etcd, opts.services, opts.backends)));
    return results;
  } finally {
    if (heartbeat) clearInterval(heartbeat);
    etcd?.close();
    await down(stateDir);
  }
}
