// Pods the benchmarks control exactly: they live on a "virtual" node (a Node object with no runner, kept
// Ready by a heartbeat here) and the benchmark sets their status itself, as a kubelet would.
import type { Etcd3 } from 'etcd3';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { GlobalService } from '../../mesh/schema/values.js';
import { waitFor } from '../../testbed/daemon.js';

export const VNODE = 'bench-virtual';

function readyStatus(ip: string, ready: boolean) {
  const at = new Date().toISOString();
  const c = (type: string, ok: boolean) => ({ type, status: ok ? 'True' : 'False', lastTransitionTime: at });
  return { status: { phase: 'Running', podIP: ip, podIPs: [{ ip }], conditions: [c('PodScheduled', true), c('Initialized', true), c('ContainersReady', ready), c('Ready', ready)] } };
}

/** Creates the virtual node (pod CIDR `cidr`) and keeps it Ready until the returned timer is cleared. */
export async function virtualNode(rest: KubeRest, cidr: string): Promise<NodeJS.Timeout> {
  await rest.post('/api/v1/nodes', { metadata: { name: VNODE, labels: { 'topology.kubernetes.io/zone': 'bench-v' } }, spec: { podCIDR: cidr, podCIDRs: [cidr] } });
  const beat = () => {
    const at = new Date().toISOString();
    return rest.patch(`/api/v1/nodes/${VNODE}/status`, { status: { conditions: [{ type: 'Ready', status: 'True', reason: 'Bench', lastHeartbeatTime: at, lastTransitionTime: at }] } }, 'strategic');
  };
  await beat();
  return setInterval(() => void beat().catch(() => {}), 10_000);
}

/**
 * Flips one virtual pod's readiness `changes` times and measures, per change, the time from the status
 * write in the Kubernetes API to the backend's new readiness showing at `key` in `etcd`.
 */
export async function flipLatency(o: { rest: KubeRest; etcd: Etcd3; key: string; ns: string; ip: string; changes: number }): Promise<number[]> {
  const { rest, etcd, key, ns, ip } = o;
  await rest.post(`/api/v1/namespaces/${ns}/pods`, { metadata: { name: 'flip', labels: { app: 'flip' } }, spec: { nodeName: VNODE, containers: [{ name: 'c', image: 'skein-echo' }] } });
  await rest.patch(`/api/v1/namespaces/${ns}/pods/flip/status`, readyStatus(ip, true), 'strategic');
  await rest.post(`/api/v1/namespaces/${ns}/services`, { metadata: { name: 'flip', annotations: { 'skein.io/global': 'true' } }, spec: { selector: { app: 'flip' }, ports: [{ name: 'http', port: 80 }] } });
  const readyAt = async () => {
    const raw = await etcd.get(key).string();
    return raw ? GlobalService.parse(JSON.parse(raw)).backends[0]?.ready : undefined;
  };
  await waitFor(`flip ready at ${key}`, async () => ((await readyAt()) === true ? true : undefined), 60_000);

  const watcher = await etcd.watch().key(key).create();
  let expect: boolean | undefined;
  let resolveFlip: (() => void) | undefined;
  watcher.on('put', (kv) => {
    if (GlobalService.parse(JSON.parse(kv.value.toString())).backends[0]?.ready === expect) resolveFlip?.();
  });
  const samples: number[] = [];
  let ready = true;
  try {
    for (let i = 0; i < o.changes; i++) {
      ready = !ready;
      expect = ready;
      const seen = new Promise<void>((r) => (resolveFlip = r));
      const t0 = performance.now();
      await rest.patch(`/api/v1/namespaces/${ns}/pods/flip/status`, readyStatus(ip, ready), 'strategic');
      await Promise.race([seen, new Promise((_, rej) => setTimeout(() => rej(new Error(`change ${i} did not arrive within 10 s`)), 10_000))]);
      samples.push(performance.now() - t0);
    }
  } finally {
    await watcher.cancel();
  }
  return samples;
}

export async function pool<T>(items: T[], concurrency: number, fn: (t: T) => Promise<unknown>): Promise<void> {
  let i = 0;
  await Promise.all(
    Array.from({ length: concurrency }, async () => {
      while (i < items.length) await fn(items[i++]!);
    }),
  );
}
