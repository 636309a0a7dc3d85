// One skein-agent per node of a local cluster, attached to the node's cgroup (every pod process of the node
// lives below it) with its maps and links pinned under the state dir's bpffs directory. Each agent has its
// node identity from the mesh CA (etcd user node-<node> on the mesh etcd; its node to the node CA) and
// serves the SPIFFE Workload API on a socket. Like a hostNetwork DaemonSet, it runs in its node's network
// namespace (entered with nsenter, which leaves the mount namespace alone: bpffs and cgroupfs stay as they
// are): its probes of backends leave from the node, as its pods' connects do, and it serves HTTP on the
// node's address (the host routes the cluster's /16 to the fabric); the mesh etcd and kube-apiserver listen
// on the host's fabric address, which every node reaches.
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { issueNodeIdentity } from '../mtls/mesh-identities.js';
import { spawnDaemon, waitFor } from './daemon.js';
import { distPath } from './repo.js';
import { meshPki } from './skein-apiserver.js';
import { nodeNet } from './topology.js';

export const bpffsDir = (tag: string) => `/sys/fs/bpf/skein/${tag}`;

export interface AgentSpec {
  tag: string;
  cluster: { name: string; id: number };
  index: number;
  clusterDir: string;
  logDir: string;
  controlCgroup: string;
  cgroupRoot: string;
  meshEtcdUrl: string;
}

/** Where the Workload API of node `index` listens (what SPIFFE_ENDPOINT_SOCKET points pods to). */
export const workloadSocket = (clusterDir: string, index: number) => join(clusterDir, `agent-${index}`, 'workload.sock');

const nodeCertFiles = (clusterDir: string, index: number) => ({ cert: join(clusterDir, `agent-${index}`, 'node.crt'), key: join(clusterDir, `agent-${index}`, 'node.key') });

async function ensureNodeCert(a: AgentSpec): Promise<void> {
  const files = nodeCertFiles(a.clusterDir, a.index);
  if (existsSync(files.cert)) return;
  const pki = meshPki(a.clusterDir);
  const mesh = { certPem: readFileSync(pki.ca, 'utf8'), keyPem: readFileSync(pki.caKey, 'utf8') };
  const node = nodeNet(a.tag, a.cluster, a.index);
  const cert = await issueNodeIdentity({ cluster: a.cluster.name, mesh }, node.name);
  mkdirSync(join(a.clusterDir, `agent-${a.index}`), { recursive: true, mode: 0o700 });
  writeFileSync(files.cert, cert.certPem);
  writeFileSync(files.key, cert.keyPem, { mode: 0o600 });
}

/**
 * The agents' scheduling priority (nice). On a real node the agent DaemonSet has its own CPU request
 * (`agent.resources`, system-node-critical); here every node, control plane and pod shares the host's cores in
 * one CPU cgroup, and the drill benchmark timed the agent's 20 ms failure signal running 76–147 ms late while
 * the test bed started replacement pods. A higher priority stands in for that request.
 */
const AGENT_NICE = -10;

function agentArgv(a: AgentSpec, port: number): string[] {
  const node = nodeNet(a.tag, a.cluster, a.index);
  const pki = meshPki(a.clusterDir);
  const nodeCert = nodeCertFiles(a.clusterDir, a.index);
  return [
    'nice',
    `--adjustment=${AGENT_NICE}`,
    'nsenter',
    `--net=/run/netns/${node.netns}`,
    '--',
    process.execPath,
    distPath('datapath', 'agent', 'main.js'),
    `--cluster-name=${a.cluster.name}`,
    `--node-name=${node.name}`,
    `--mesh-etcd=${a.meshEtcdUrl}`,
    `--mesh-etcd-ca=${pki.ca}`,
    `--mesh-etcd-cert=${nodeCert.cert}`,
    `--mesh-etcd-key=${nodeCert.key}`,
    `--cgroup=${join(a.cgroupRoot, node.cgroup)}`,
    // The node runner makes each pod's cgroup right under the node's (pod-<uid>): only there is a pod.
    `--pod-cgroup-parent=${join(a.cgroupRoot, node.cgroup)}`,
    `--pin-dir=${join(bpffsDir(a.tag), a.cluster.name, String(a.index))}`,
    `--listen=${node.nodeIp}:${port}`,
    `--workload-socket=${workloadSocket(a.clusterDir, a.index)}`,
    `--node-cert=${nodeCert.cert}`,
    `--node-key=${nodeCert.key}`,
    `--kubeconfig=${join(a.clusterDir, 'kubeconfigs', `${node.name}.yaml`)}`,
  ];
}

/** Starts the agent of one node and waits until it serves; returns its HTTP address. */
export async function startAgent(a: AgentSpec): Promise<string> {
  await ensureNodeCert(a);
  // Any port: the node's namespace runs nothing else that listens.
  const port = 9877;
  spawnDaemon({ cgroup: join(a.controlCgroup, `agent-${a.index}`), logFile: join(a.logDir, `agent-${a.index}.log`), argv: agentArgv(a, port) });
  const url = `http://${nodeNet(a.tag, a.cluster, a.index).nodeIp}:${port}`;
  await waitFor(`skein-agent ${a.cluster.name}/${a.index}`, async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), 30_000, `see ${join(a.logDir, `agent-${a.index}.log`)}`);
  return url;
}
