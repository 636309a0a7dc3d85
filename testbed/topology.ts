// Names and addresses of one test bed. Everything is derived from the state dir (its tag), the cluster ID and
// the node index, so `down` can find all of it again from the state dir alone, also after a crash.
//
//   cluster c:   pods 10.c.0.0/16; node n (1..127) pods 10.c.n.0/24, bridge gateway 10.c.n.1
//                node n <-> fabric link 10.c.0.(2n+1) / 10.c.0.(2n) (a /31)
//   fabric:      one router netns per state dir joining every node of every cluster; the root netns
//                reaches pods through one veth to it (10.0.T.1 <-> 10.0.T.2, a /30 picked from the tag)
//   services:    ClusterIPs from 100.64.0.0/16 in every cluster (virtual, never routed: the BPF socket LB
//                rewrites them before a packet exists)
import { createHash } from 'node:crypto';
import { resolve } from 'node:path';

export const SERVICE_CIDR = '100.64.0.0/16';
const MAX_NODES = 127;

export function stateTag(stateDir: string): string {
  return createHash('sha256').update(resolve(stateDir)).digest('hex').slice(0, 5);
}

export interface NodeNet {
  name: string;
  index: number;
  netns: string;
  podCidr: string;
  gateway: string;
  nodeIp: string;
  fabricIp: string;
  /** Veth end in the fabric netns. */
  fabricLink: string;
  /** The node's cgroup relative to the test bed's cgroup root. */
  cgroup: string;
}

function nodeName(cluster: string, index: number): string {
  return `${cluster}-node-${index}`;
}

export function nodeNet(tag: string, cluster: { name: string; id: number }, index: number): NodeNet {
  if (index < 1 || index > MAX_NODES) throw new Error(`node index ${index}: must be 1..${MAX_NODES}`);
  const c = cluster.id;
  return {
    name: nodeName(cluster.name, index),
    index,
    netns: `sk-${tag}-${cluster.name}-n${index}`,
    podCidr: `10.${c}.${index}.0/24`,
    gateway: `10.${c}.${index}.1`,
    nodeIp: `10.${c}.0.${2 * index + 1}`,
    fabricIp: `10.${c}.0.${2 * index}`,
    fabricLink: `n${c.toString(16).padStart(2, '0')}${index.toString(16).padStart(2, '0')}`,
    cgroup: `nodes/${cluster.name}/${index}`,
  };
}

export function clusterPodCidr(id: number): string {
  return `10.${id}.0.0/16`;
}

export interface FabricNet {
  netns: string;
  rootLink: string;
  rootIp: string;
  fabricIp: string;
}

export function fabricNet(tag: string): FabricNet {
  const t = parseInt(tag.slice(0, 2), 16);
  return { netns: `sk-${tag}-fabric`, rootLink: `sk${tag}`, rootIp: `10.0.${t}.1`, fabricIp: `10.0.${t}.2` };
}

export function podNetnsName(tag: string, podUid: string): string {
  return `sk-${tag}-p-${podUid.replace(/-/g, '').slice(0, 12)}`;
}

/** Host-side (node netns) veth name of a pod: unique within its node. */
export function podLinkName(podUid: string): string {
  return `p${podUid.replace(/-/g, '').slice(0, 12)}`;
}
