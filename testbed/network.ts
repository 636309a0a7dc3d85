// The test bed's L3 network: a fabric router netns per state dir, a netns per node (a bridge for its pods,
// a /31 to the fabric), a netns per pod. The root netns only gets routes to the pod CIDRs via the fabric; it
// never forwards, and nothing here routes to any address outside the namespaces we create.
import { addNetns, addVethPair, deleteNetns, ip, listNetns, sysctl } from './netns.js';
import { clusterPodCidr, fabricNet, type NodeNet } from './topology.js';

export async function assertRoutesFree(tag: string, clusterIds: number[]): Promise<void> {
  const fabric = fabricNet(tag);
  for (const cidr of [...clusterIds.map(clusterPodCidr), `${fabric.rootIp}/30`]) {
    const out = (await ip(undefined, '-4', 'route', 'show', 'root', cidr)).trim();
    if (out && !out.includes(`dev ${fabric.rootLink}`)) {
      throw new Error(`the route for ${cidr} is taken (${out}): another "skein local" state dir is up with the same cluster ID; pick other IDs in --clusters or run "skein local down" on it`);
    }
  }
}

export async function createFabric(tag: string, clusterIds: number[]): Promise<void> {
  const f = fabricNet(tag);
  await addNetns(f.netns);
  await sysctl(f.netns, 'net.ipv4.ip_forward', '1');
  await addVethPair({ aNs: undefined, aName: f.rootLink, aAddr: `${f.rootIp}/30`, bNs: f.netns, bName: 'root', bAddr: `${f.fabricIp}/30`, tmpName: `t${f.rootLink}` });
  for (const id of clusterIds) await ip(undefined, 'route', 'replace', clusterPodCidr(id), 'via', f.fabricIp, 'dev', f.rootLink);
}

export async function createNodeNetwork(tag: string, node: NodeNet): Promise<void> {
  const f = fabricNet(tag);
  await addNetns(node.netns);
  await sysctl(node.netns, 'net.ipv4.ip_forward', '1');
  // A fixed MAC: otherwise a bridge takes its lowest port's, so adding a pod's veth can change the gateway's
  // MAC under every other pod on the node and drop their traffic until their neighbor entries expire.
  await ip(node.netns, 'link', 'add', 'br0', 'address', podMac(node.gateway), 'type', 'bridge');
  await ip(node.netns, 'addr', 'add', `${node.gateway}/24`, 'dev', 'br0');
  await ip(node.netns, 'link', 'set', 'br0', 'up');
  await addVethPair({ aNs: f.netns, aName: node.fabricLink, aAddr: `${node.fabricIp}/31`, bNs: node.netns, bName: 'eth0', bAddr: `${node.nodeIp}/31`, tmpName: `t${node.fabricLink}` });
  await ip(node.netns, 'route', 'add', 'default', 'via', node.fabricIp);
  await ip(f.netns, 'route', 'add', node.podCidr, 'via', node.nodeIp);
}

export async function createPodNetwork(node: NodeNet, pod: { netns: string; link: string; ip: string }): Promise<void> {
  await addNetns(pod.netns);
  await addVethPair({ aNs: node.netns, aName: pod.link, bNs: pod.netns, bName: 'eth0', bAddr: `${pod.ip}/24`, bMac: podMac(pod.ip), tmpName: `t${pod.link.slice(1)}` });
  await ip(node.netns, 'link', 'set', pod.link, 'master', 'br0');
  await ip(pod.netns, 'route', 'add', 'default', 'via', node.gateway);
}

/** 0a:58 + the IPv4 address, as Kubernetes' bridge CNI does: neighbor caches stay right when an IP is reused. */
export function podMac(ip: string): string {
  return ['0a', '58', ...ip.split('.').map((o) => Number(o).toString(16).padStart(2, '0'))].join(':');
}

export const deletePodNetwork = (netns: string) => deleteNetns(netns);

/** Deletes every namespace of this state dir (veths and the root routes go with them). */
export async function destroyNetworks(tag: string): Promise<string[]> {
  const mine = (await listNetns()).filter((n) => n.startsWith(`sk-${tag}-`));
  // Pods first, then nodes, then the fabric: deleting in any order works, this just keeps logs readable.
  mine.sort((a, b) => rank(a) - rank(b));
  for (const ns of mine) await deleteNetns(ns);
  return mine;
}

const rank = (ns: string) => (ns.includes('-p-') ? 0 : ns.endsWith('-fabric') ? 2 : 1);
