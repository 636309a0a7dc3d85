// The node runner: the test bed's kubelet. Registers its Node, runs the pods bound to it, keeps their
// status, and cleans up sandboxes it no longer has pods for. Pods keep running if the runner restarts.
import { mkdirSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { KubeConfig } from '@kubernetes/client-node';
import { startInformer } from '../../mesh/kube/informer.js';
import { isConflict, KubeRest } from '../../mesh/kube/rest.js';
import { destroyCgroup } from '../cgroup.js';
import { deletePodNetwork } from '../network.js';
import { podNetnsName } from '../topology.js';
import { loadConfig, type NodeRunnerConfig } from './config.js';
import { IpAllocator, PodWorker, type RunnerContext } from './pod-worker.js';
import { startKubeletApi } from './kubelet-api.js';
import { SA_MOUNT } from './service-account.js';
import type { Pod } from '../../mesh/kube/objects.js';

const log = (msg: string) => console.log(`${new Date().toISOString()} ${msg}`);

function nodeStatus(cfg: NodeRunnerConfig, kubeletPort: number, heartbeat: string): unknown {
  return {
    status: {
      capacity: { cpu: '4', memory: '8Gi', pods: '110' },
      allocatable: { cpu: '4', memory: '8Gi', pods: '110' },
      addresses: [
        { type: 'InternalIP', address: cfg.node.nodeIp },
        { type: 'ExternalIP', address: cfg.kubeletApi.host },
        { type: 'Hostname', address: cfg.node.name },
      ],
      daemonEndpoints: { kubeletEndpoint: { Port: kubeletPort } },
      conditions: [{ type: 'Ready', status: 'True', reason: 'SkeinNodeRunnerReady', message: 'skein local node runner is posting status', lastHeartbeatTime: heartbeat, lastTransitionTime: heartbeat }],
      nodeInfo: {
        machineID: cfg.node.name,
        systemUUID: cfg.node.name,
        bootID: String(process.pid),
        kernelVersion: '',
        osImage: 'skein local',
        containerRuntimeVersion: 'skein-local://0.1',
        kubeletVersion: 'skein-node-runner',
        kubeProxyVersion: '',
        operatingSystem: 'linux',
        architecture: process.arch === 'x64' ? 'amd64' : process.arch,
      },
    },
  };
}

async function registerNode(rest: KubeRest, cfg: NodeRunnerConfig, kubeletPort: number): Promise<void> {
  const body = {
    apiVersion: 'v1',
    kind: 'Node',
    metadata: {
      name: cfg.node.name,
      labels: {
        'kubernetes.io/hostname': cfg.node.name,
        'kubernetes.io/os': 'linux',
        'topology.kubernetes.io/zone': cfg.zone,
        'skein.io/cluster': cfg.cluster,
      },
    },
    spec: { podCIDR: cfg.node.podCidr, podCIDRs: [cfg.node.podCidr] },
  };
  try {
    await rest.post('/api/v1/nodes', body);
  } catch (err) {
    if (!isConflict(err)) throw err;
  }
  await rest.patch(`/api/v1/nodes/${cfg.node.name}/status`, nodeStatus(cfg, kubeletPort, new Date().toISOString()), 'strategic');
}

/** Sandboxes on this node that belong to no pod the API server still binds here. */
async function removeOrphans(cfg: NodeRunnerConfig, live: Set<string>): Promise<void> {
  let entries: string[];
  try {
    entries = readdirSync(cfg.cgroup).filter((e) => e.startsWith('pod-'));
  } catch {
    return;
  }
  for (const e of entries) {
    const uid = e.slice(4);
    if (live.has(uid)) continue;
    log(`removing orphan sandbox of pod ${uid}`);
    await destroyCgroup(join(cfg.cgroup, e));
    await deletePodNetwork(podNetnsName(cfg.tag, uid));
    rmSync(join(cfg.podsDir, uid), { recursive: true, force: true });
  }
}

async function main(): Promise<void> {
  const cfg = loadConfig(process.argv[2] ?? '');
  const kc = new KubeConfig();
  kc.loadFromFile(cfg.kubeconfig);
  const rest = new KubeRest(kc);
  const prefix = cfg.node.podCidr.split('.').slice(0, 3).join('.');
  const ctx: RunnerContext = { cfg, rest, log, ips: new IpAllocator(prefix) };
  ctx.ips.reserve('gateway', cfg.node.gateway);
  mkdirSync(SA_MOUNT, { recursive: true }); // the mount point containers' credentials are bound onto
  const workers = new Map<string, PodWorker>();
  const kubelet = await startKubeletApi({
    ...cfg.kubeletApi,
    caFile: cfg.caFile,
    findLog: (ns, pod, container) => [...workers.values()].find((w) => w.ref === `${ns}/${pod}`)?.containerLog(container),
  });

  for (let attempt = 1; ; attempt++) {
    try {
      await registerNode(rest, cfg, kubelet.port);
      break;
    } catch (err) {
      if (attempt >= 60) throw err;
      log(`node registration failed (attempt ${attempt}): ${(err as Error).message}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
  log(`node ${cfg.node.name} registered (${cfg.node.podCidr}), kubelet API on ${cfg.kubeletApi.host}:${kubelet.port}`);
  setInterval(() => {
    rest.patch(`/api/v1/nodes/${cfg.node.name}/status`, nodeStatus(cfg, kubelet.port, new Date().toISOString()), 'strategic').catch((err: Error) => log(`heartbeat failed: ${err.message}`));
  }, 20_000).unref();

  const fieldSelector = `spec.nodeName=${cfg.node.name}`;
  const informer = startInformer<Pod>({
    kc,
    path: '/api/v1/pods',
    fieldSelector,
    list: () => rest.list(`/api/v1/pods?fieldSelector=${encodeURIComponent(fieldSelector)}`),
    onEvent: (type, pod) => {
      const uid = pod.metadata?.uid;
      if (!uid) return;
      let w = workers.get(uid);
      if (type === 'delete') {
        workers.delete(uid);
        void w?.terminate(false);
        return;
      }
      if (!w) workers.set(uid, (w = new PodWorker(ctx, pod)));
      w.sync(pod);
    },
    onRestart: (err, attempt) => log(`pod watch restarting (attempt ${attempt}): ${(err as Error)?.message ?? err}`),
  });
  await informer.synced;
  await removeOrphans(cfg, new Set(workers.keys()));
  log('pods synced');

  const shutdown = () => {
    // Like a kubelet: stopping the runner leaves its pods running; `skein local down` removes them.
    void informer.stop().finally(() => process.exit(0));
  };
  process.on('SIGTERM', shutdown);
  process.on('SIGINT', shutdown);
}

main().catch((err: Error) => {
  log(`node runner failed: ${err.stack ?? err.message}`);
  process.exit(1);
});
