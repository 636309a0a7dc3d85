// Nodes → one MeshNode value each (IPv4 addresses, pod CIDRs, zone), and the cluster config, whose pod
// CIDRs peers pin and check this cluster's pod addresses against: the cluster's whole pod CIDR when it is
// configured (--cluster-pod-cidr: nodes added after a connect are covered), else every node's together.
import { isIPv4 } from 'node:net';
import { Subnet } from '../../mesh/address-policy.js';

import { keys } from '../../mesh/schema/keys.js';
import { ClusterConfig, encodeValue, MeshNode } from '../../mesh/schema/values.js';
import type { ExportContext } from './context.js';
import type { KubeNode } from '../../mesh/kube/objects.js';

/** spec.podCIDRs (every family) when set, else the older single spec.podCIDR. */
const allPodCidrs = (n: KubeNode): string[] => n.spec?.podCIDRs ?? (n.spec?.podCIDR ? [n.spec.podCIDR] : []);
const isIPv4Cidr = (cidr: string) => isIPv4(cidr.split('/')[0] ?? '');
/** The mesh carries IPv4 only (the socket LB is IPv4): a dual-stack node exports its IPv4 ranges. */
const nodePodCidrs = (n: KubeNode): string[] => allPodCidrs(n).filter(isIPv4Cidr);

export class NodeExport {
  private readonly nodes = new Map<string, KubeNode>();
  private readonly reportedIgnored = new Map<string, string>();

  private readonly clusterSubnets: Subnet[];

  constructor(private readonly o: ExportContext & { clusterId: number; clusterPodCidrs?: string[] }) {
    this.clusterSubnets = (o.clusterPodCidrs ?? []).flatMap((c) => Subnet.parse(c) ?? []);
  }

  get count(): number {
    return this.nodes.size;
  }

  onNode(type: string, node: KubeNode): void {
    const name = node.metadata!.name!;
    if (type === 'delete') {
      this.nodes.delete(name);
      this.o.writer.set(keys.node(this.o.cluster, name), null);
    } else {
      const ignored = allPodCidrs(node).filter((c) => !isIPv4Cidr(c));
      // One line per node and change, not per event: the node keeps being exported with its IPv4 ranges.
      if (ignored.length && this.reportedIgnored.get(name) !== ignored.join(',')) {
        this.reportedIgnored.set(name, ignored.join(','));
        this.o.log.warn({ node: name, podCidrs: ignored }, 'IPv6 pod CIDRs are not meshed (Skein carries IPv4 only); exporting the node with its IPv4 ranges');
      }
      this.warnOutsideClusterCidr(name, node);
      this.nodes.set(name, node);
      const value = {
        name,
        cluster: this.o.cluster,
        addresses: (node.status?.addresses ?? []).filter((a) => isIPv4(a.address)).map((a) => ({ type: a.type, ip: a.address })),
        podCidrs: nodePodCidrs(node),
        zone: node.metadata?.labels?.['topology.kubernetes.io/zone'],
      };
      this.o.writer.set(keys.node(this.o.cluster, name), encodeValue(MeshNode, value));
    }
    this.o.metrics.exportedNodes.set(this.nodes.size);
    this.writeConfig();
  }

  /** The configured cluster pod CIDRs, else every node's, deduplicated and sorted. */
  podCidrs(): string[] {
    if (this.clusterSubnets.length) return this.clusterSubnets.map((s) => s.text).sort();
    return [...new Set([...this.nodes.values()].flatMap(nodePodCidrs))].sort();
  }

  /** A node whose pod CIDR the configured cluster CIDR misses: peers pinned to it would refuse its pods. */
  private warnOutsideClusterCidr(name: string, node: KubeNode): void {
    if (!this.clusterSubnets.length) return;
    const outside = nodePodCidrs(node).filter((c) => {
      const s = Subnet.parse(c);
      return !s || !this.clusterSubnets.some((cluster) => cluster.covers(s));
    });
    const key = `outside:${outside.join(',')}`;
    if (outside.length && this.reportedIgnored.get(`${name}/cluster`) !== key) {
      this.reportedIgnored.set(`${name}/cluster`, key);
      this.o.log.warn({ node: name, podCidrs: outside, clusterPodCidrs: this.podCidrs() }, 'node pod CIDRs outside --cluster-pod-cidr: peers pinned to the cluster CIDR refuse these pods (widen --cluster-pod-cidr)');
    }
  }

  /** Also written once after the initial sync: a cluster without nodes still has a config. */
  writeConfig(): void {
    this.o.writer.set(keys.config(this.o.cluster), encodeValue(ClusterConfig, { name: this.o.cluster, id: this.o.clusterId, podCidrs: this.podCidrs(), schema: 'v1' }));
  }
}
