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
import { startKubeletNode } from './kubelet-node.js';
import { createNodeNetwork } from './network.js';
import { nodeNet, type NodeNet } from './topology.js';
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
  nodes: number;
  clusterDir: string;
  logDir: string;
  controlCgroup: string;
  kubeBin: string;
  plane: ControlPlane;
  admin: KubeConfig;
  cgroup2Mount: string;
  /** Image archives (build.sh) imported into every node's containerd. */
  images: string[];
  progress: (msg: string) => void;
}

export async function startKubeletNodes(s: KubeletClusterSpec): Promise<NodeNet[]> {
  const nodes = Array.from({ length: s.nodes }, (_, i) => nodeNet(s.tag, s.cluster, i + 1));
  const kubeProxyKubeconfig = join(s.clusterDir, 'kubeconfigs', 'kube-proxy.yaml');
  await writeUserKubeconfig(s.plane.ca, s.plane.apiserverUrl, { name: 'kube-proxy', commonName: 'system:kube-proxy' }, kubeProxyKubeconfig);
  s.progress(`${s.cluster.name}: starting ${s.nodes} node(s): containerd (importing ${s.images.length} images), kubelet, kube-proxy`);
  await Promise.all(
    nodes.map(async (node) => {
      await createNodeNetwork(s.tag, node);
      const kubeconfig = join(s.clusterDir, 'kubeconfigs', `${node.name}.yaml`);
      await writeUserKubeconfig(s.plane.ca, s.plane.apiserverUrl, { name: node.name, commonName: `system:node:${node.name}`, organizations: ['system:nodes'] }, kubeconfig);
      await startKubeletNode({
        tag: s.tag,
        clusterId: s.cluster.id,
        clusterDir: s.clusterDir,
        logDir: s.logDir,
        controlCgroup: s.controlCgroup,
        node,
        zone: `${s.cluster.name}-${node.index % 2 === 1 ? 'a' : 'b'}`,
        cluster: s.cluster.name,
        kubeBin: s.kubeBin,
        kubeconfig,
        kubeProxyKubeconfig,
        caFile: s.plane.pki.caCert,
        images: s.images,
      });
    }),
  );
  const rest = new KubeRest(s.admin);
  await waitFor(
    `${s.nodes} kubelet(s) of ${s.cluster.name} to be Ready`,
    async () => {
      const items = (await rest.get<{ items: Node[] }>('/api/v1/nodes')).items;
      const ready = items.filter((n) => n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True'));
      return ready.length >= s.nodes ? true : undefined;
    },
    90_000,
    `see ${s.logDir}/*-kubelet.log`,
  );
  // What kube-controller-manager's node IPAM would do (the test bed fixes each node's /24 by its index).
  for (const node of nodes) {
    const current = await rest.get<Node>(`/api/v1/nodes/${node.name}`);
    if (!current.spec?.podCIDR) await rest.patch(`/api/v1/nodes/${node.name}`, { spec: { podCIDR: node.podCidr, podCIDRs: [node.podCidr] } }, 'merge');
  }
  return nodes;
}

/** helm install of the chart; returns the mesh etcd URL peers dial and each node's agent HTTP address. */
export async function installSkein(s: KubeletClusterSpec, nodes: NodeNet[]): Promise<{ meshEtcdUrl: string; agents: string[] }> {
  s.progress(`${s.cluster.name}: helm install skein (skein-apiserver, mesh etcd, agent DaemonSet)`);
  const workloadDir = join(s.clusterDir, 'workload');
  mkdirSync(workloadDir, { recursive: true });
  await installChart({
    kubeconfig: join(s.clusterDir, 'kubeconfigs', 'admin.yaml'),
    valuesFile: join(s.clusterDir, 'skein-values.json'),
    values: testbedValues({ tag: s.tag, cluster: s.cluster, cgroup2Mount: s.cgroup2Mount, workloadDir }),
  });
  const rest = new KubeRest(s.admin);
  await waitFor(`skein-apiserver of ${s.cluster.name} to be ready`, async () => ((await rest.get<string>(skeinProxyPath('/readyz'))) !== undefined ? true : undefined), 60_000, `kubectl -n skein-system logs deploy/skein-apiserver`);
  const agents = nodes.map((n) => `http://${n.nodeIp}:${AGENT_PORT}`);
  for (const url of agents) await waitFor(`skein-agent at ${url}`, async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), 60_000);
  return { meshEtcdUrl: `https://${nodes[0]!.nodeIp}:${MESH_ETCD_NODE_PORT}`, agents };
}

/** Where node `index`'s agent serves the Workload API (the chart's per-node socket directory). */
export const kubeletWorkloadSocket = (clusterDir: string, nodeName: string) => join(clusterDir, 'workload', nodeName, 'agent.sock');
