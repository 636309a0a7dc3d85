// One skein-agent per node of a local cluster, attached to the node's cgroup (every pod process of the node
// lives below it) with its maps and links pinned under the state dir's bpffs directory.
import { join } from 'node:path';
import { spawnDaemon, waitFor } from './daemon.js';
import { freePort } from './ports.js';
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

export function agentArgv(a: AgentSpec, port: number): string[] {
  const node = nodeNet(a.tag, a.cluster, a.index);
  const pki = meshPki(a.clusterDir);
  return [
    process.execPath,
    distPath('datapath', 'agent', 'main.js'),
    `--cluster-name=${a.cluster.name}`,
    `--node-name=${node.name}`,
    `--mesh-etcd=${a.meshEtcdUrl}`,
    `--mesh-etcd-ca=${pki.ca}`,
    `--mesh-etcd-cert=${pki.rootCert}`,
    `--mesh-etcd-key=${pki.rootKey}`,
    `--cgroup=${join(a.cgroupRoot, node.cgroup)}`,
    `--pin-dir=${join(bpffsDir(a.tag), a.cluster.name, String(a.index))}`,
    `--listen=127.0.0.1:${port}`,
  ];
}

/** Starts the agent of one node and waits until it serves; returns its HTTP address. */
export async function startAgent(a: AgentSpec): Promise<string> {
  const port = await freePort();
  spawnDaemon({ cgroup: join(a.controlCgroup, `agent-${a.index}`), logFile: join(a.logDir, `agent-${a.index}.log`), argv: agentArgv(a, port) });
  const url = `http://127.0.0.1:${port}`;
  await waitFor(`skein-agent ${a.cluster.name}/${a.index}`, async () => ((await fetch(`${url}/healthz`)).ok ? true : undefined), 30_000, `see ${join(a.logDir, `agent-${a.index}.log`)}`);
  return url;
}
