// The nodes of one test-bed cluster on the real kubelet + containerd (kubelet-node.ts), and Skein installed on
// them by its Helm chart (chart.ts): skein-apiserver with its mesh etcd and the agent DaemonSet as pods.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import { KubeRest } from '../mesh/kube/rest.js';
import { skeinProxyPath } from '../mesh/service-ref.js';
import { installChart, testbedValues } from './chart.js';
import { waitFor } from './daemon.js';
import { writeUserKubeconfig } from './kube-pki.js';
import { startKubelet, startNodeRuntime } from './kubelet-node.js';
import { createNodeNetwork } from './network.js';
import type { NodeNet } from './topology.js';
import type { ControlPlane } from './control-plane.js';

/** The mesh etcd's NodePort (the chart's default): peers dial it on any node's address. */
const MESH_ETCD_NODE_PORT = 32379;
const AGENT_PORT = 9877;

interface Node {
  metadata?: { name?: string };
  spec?: { podCIDR?: string };
  status?: { conditions?: { type: string; status: string }[] };
}

export interface KubeletClusterSpec {
  tag: string;
  cluster: { name: string; id: number };
  nodes: NodeNet[];
  clusterDir: string;
  logDir: string;
  controlCgroup: string;
  kubeBin: string;
  cgroup2Mount: string;
  /** Image archives (build.sh) imported into every node's containerd, and the one containerd runs as sandbox. */
  images: string[];
  sandboxImage: string;
  /** The chart's apiserver.extraArgs. */
  apiserverArgs: string[];
  progress: (msg: string) => void;
}

/** Every node's netns and containerd with the images imported: needs no control plane, so runs beside it. */
export async function startNodeRuntimes(s: KubeletClusterSpec): Promise<void> {
  s.progress(`${s.cluster.name}: starting ${s.nodes.length} node(s): containerd, importing ${s.images.length} images`);
  await Promise.all(
    s.nodes.map(async (node) => {
      await createNodeNetwork(s.tag, node);
      await startNodeRuntime({ tag: s.tag, clusterDir: s.clusterDir, logDir: s.logDir, controlCgroup: s.controlCgroup, node, images: s.images, sandboxImage: s.sandboxImage });
    }),
  );
}

/** The kubelet and kube-proxy of every node; returns once all nodes are Ready with their pod CIDRs set. */
export async function startKubelets(s: KubeletClusterSpec, plane: ControlPlane, admin: KubeConfig): Promise<void> {
  const kubeProxyKubeconfig = join(s.clusterDir, 'kubeconfigs', 'kube-proxy.yaml');
  await writeUserKubeconfig(plane.ca, plane.apiserverUrl, { name: 'kube-proxy', commonName: 'system:kube-proxy' }, kubeProxyKubeconfig);
  s.progress(`${s.cluster.name}: starting ${s.nodes.length} kubelet(s) and kube-proxy`);
  for (const node of s.nodes) {
    const kubeconfig = join(s.clusterDir, 'kubeconfigs', `${node.name}.yaml`);
    await writeUserKubeconfig(plane.ca, plane.apiserverUrl, { name: node.name, commonName: `system:node:${node.name}`, organizations: ['system:nodes'] }, kubeconfig);
    startKubelet({
      tag: s.tag,
      clusterId: s.cluster.id,
      clusterDir: s.clusterDir,
      logDir: s.logDir,
      controlCgroup: s.controlCgroup,
      node,
      images: s.images,
      sandboxImage: s.sandboxImage,
      zone: `${s.cluster.name}-${node.index % 2 === 1 ? 'a' : 'b'}`,
      cluster: s.cluster.name,
      kubeBin: s.kubeBin,
      kubeconfig,
      kubeProxyKubeconfig,
      caFile: plane.pki.caCert,
    });
  }
  const rest = new KubeRest(admin);
  await waitFor(
    `${s.nodes.length} kubelet(s) of ${s.cluster.name} to be Ready`,
    async () => {
      const items = (await rest.get<{ items: Node[] }>('/api/v1/nodes')).items;
      const ready = items.filter((n) => n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
      return ready.length >= s.nodes.length ? true : undefined;
    },
    90_000,
    `see ${s.logDir}/*-kubelet.log`,
  );
  // What kube-controller-manager's node IPAM would do (the test bed fixes each node's /24 by its index).
  for (const node of s.nodes) {
    const current = await rest.get<Node>(`/api/v1/nodes/${node.name}`);
    if (!current.spec?.podCIDR) await rest.patch(`/api/v1/nodes/${node.name}`, { spec: { podCIDR: node.podCidr, podCIDRs: [node.podCidr] } }, 'merge');
  }
}

/** helm install of the chart; returns the mesh etcd URL peers dial and each node's agent HTTP address. */
export async function installSkein(s: KubeletClusterSpec, admin: KubeConfig): Promise<{ meshEtcdUrl: string; agents: string[] }> {
  s.progress(`${s.cluster.name}: helm install skein (skein-apiserver, mesh etcd, agent DaemonSet)`);
  const workloadDir = join(s.clusterDir, 'workload');
  mkdirSync(workloadDir, { recursive: true });
  await installChart({
    kubeconfig: join(s.clusterDir, 'kubeconfigs', 'admin.yaml'),
    valuesFile: join(s.clusterDir, 'skein-values.json'),
    values: testbedValues({ tag: s.tag, cluster: s.cluster, cgroup2Mount: s.cgroup2Mount, workloadDir, apiserverArgs: s.apiserverArgs }),
  });
  const rest = new KubeRest(admin);
  await waitFor(`skein-apiserver of ${s.cluster.name} to be ready`, async () => ((await rest.get<string>(skeinProxyPath('/readyz'))) !== undefined ? true : undefined), 60_000, `kubectl -n skein-system logs deploy/skein-apiserver`);
  const agents = s.nodes.map((n) => `http://${n.nodeIp}:${AGENT_PORT}`);
  for (const url of agents) await waitFor(`skein-agent at ${url}`, async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), 60_000);
  return { meshEtcdUrl: `https://${s.nodes[0]!.nodeIp}:${MESH_ETCD_NODE_PORT}`, agents };
}

