// The nodes of one test-bed cluster on the real kubelet + containerd (kubelet-node.ts), and Skein installed on
// them by its Helm chart (chart.ts): skein-apiserver with its mesh etcd and the agent DaemonSet as pods.
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Pod } from '../mesh/kube/objects.js';
import { KubeRest } from '../mesh/kube/rest.js';
import { KubeSecrets } from '../mesh/kube/secrets.js';
import { ensureClusterCA } from '../mtls/cluster-ca.js';
import { skeinProxyPath } from '../mesh/service-ref.js';
import { installChart, SKEIN_NAMESPACE, testbedValues } from './chart.js';
import { waitFor } from './daemon.js';
import { writeUserKubeconfig } from './kube-pki.js';
import { startKubelet, startNodeRuntime } from './kubelet-node.js';
import type { Images } from './image-store.js';
import { createNodeNetwork } from './network.js';
import { writeMeshRootIdentity } from './skein-apiserver.js';
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
  /** The chart's apiserver.extraArgs. */
  apiserverArgs: string[];
  progress: (msg: string) => void;
}

/** Every node's netns and containerd with the images: needs no control plane, so runs beside it. */
export async function startNodeRuntimes(s: KubeletClusterSpec, images: Promise<Images>): Promise<Images> {
  s.progress(`${s.cluster.name}: starting ${s.nodes.length} node network(s) and containerd(s)`);
  await Promise.all(s.nodes.map((node) => createNodeNetwork(s.tag, node)));
  const { store, sandboxImage } = await images;
  await Promise.all(s.nodes.map((node) => startNodeRuntime({ tag: s.tag, clusterDir: s.clusterDir, logDir: s.logDir, controlCgroup: s.controlCgroup, node, imageStore: store, sandboxImage })));
  s.progress(`${s.cluster.name}: ${s.nodes.length} containerd(s) serving the images`);
  return images;
}

/** The kubelet and kube-proxy of every node; returns once all nodes are Ready with their pod CIDRs set. */
export async function startKubelets(s: KubeletClusterSpec, images: Images, plane: ControlPlane, admin: KubeConfig): Promise<void> {
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
      imageStore: images.store,
      sandboxImage: images.sandboxImage,
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
  s.progress(`${s.cluster.name}: ${s.nodes.length} node(s) Ready`);
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
    // Readiness is waited for below (polled finer than helm's 2 s): helm exits instead of polling beside it.
    wait: false,
  });
  s.progress(`${s.cluster.name}: helm install done`);
  const rest = new KubeRest(admin);
  await waitFor(`skein-apiserver of ${s.cluster.name} to be ready`, async () => ((await rest.get<string>(skeinProxyPath('/readyz'))) !== undefined ? true : undefined), 150_000, `kubectl -n skein-system logs deploy/skein-apiserver`);
  // Every pod of the release Ready (what helm --wait checks), polled finer than helm's 2 s.
  await waitFor(
    `the ${s.nodes.length + 1} pods of ${SKEIN_NAMESPACE} in ${s.cluster.name} to be ready`,
    async () => {
      const pods = (await rest.get<{ items: Pod[] }>(`/api/v1/namespaces/${SKEIN_NAMESPACE}/pods`)).items;
      return pods.length === s.nodes.length + 1 && pods.every((p) => p.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True')) ? true : undefined;
    },
    90_000,
    `kubectl -n ${SKEIN_NAMESPACE} get pods`,
  );
  // The CA skein-apiserver made at its start (read, never made here): the test bed's mesh etcd root identity.
  await writeMeshRootIdentity(s.clusterDir, await ensureClusterCA(new KubeSecrets(rest), s.cluster.name));
  const agents = s.nodes.map((n) => `http://${n.nodeIp}:${AGENT_PORT}`);
  for (const url of agents) await waitFor(`skein-agent at ${url}`, async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), 90_000);
  return { meshEtcdUrl: `https://${s.nodes[0]!.nodeIp}:${MESH_ETCD_NODE_PORT}`, agents };
}

