import { describe, expect, it, vi } from 'vitest';
import type { KubeNode } from '../../mesh/kube/objects.js';
import { keys } from '../../mesh/schema/keys.js';
import { ClusterConfig, MeshNode } from '../../mesh/schema/values.js';
import { StateWriter } from '../../mesh/state-writer.js';
import { createMetrics } from '../metrics.js';
import { NodeExport } from './node-export.js';
import { MemoryKv } from './test-fakes.js';

const CLUSTER = 'east';

const node = (name: string, spec: KubeNode['spec'], zone?: string): KubeNode => ({
  metadata: { name, labels: zone ? { 'topology.kubernetes.io/zone': zone } : {} },
  spec,
  status: { addresses: [{ type: 'InternalIP', address: `172.18.0.${name.length}` }, { type: 'Hostname', address: name }] },
});

function nodeExport(clusterPodCidrs?: string[]) {
  const kv = new MemoryKv();
  const writer = new StateWriter(kv);
  writer.resume();
  const metrics = createMetrics();
  const log = { info: vi.fn(), warn: vi.fn() };
  const nodes = new NodeExport({ cluster: CLUSTER, clusterId: 3, clusterPodCidrs, writer, metrics, log });
  const config = async () => {
    await writer.idle();
    return ClusterConfig.parse(JSON.parse(kv.data.get(keys.config(CLUSTER))!));
  };
  const meshNode = async (name: string) => {
    await writer.idle();
    return MeshNode.parse(JSON.parse(kv.data.get(keys.node(CLUSTER, name))!));
  };
  return { nodes, kv, metrics, log, config, meshNode };
}

describe('node export', () => {
  it('exports each node and puts every node\'s pod CIDRs, deduplicated and sorted, in the cluster config', async () => {
    const t = nodeExport();
    t.nodes.onNode('add', node('n1', { podCIDR: '10.4.1.0/24', podCIDRs: ['10.4.1.0/24'] }, 'z1'));
    t.nodes.onNode('add', node('n2', { podCIDR: '10.4.0.0/24' })); // an older node: podCIDR alone
    t.nodes.onNode('add', node('n3', { podCIDR: '10.4.0.0/24', podCIDRs: ['10.4.0.0/24'] })); // the same range twice
    expect(await t.config()).toEqual({ name: CLUSTER, id: 3, podCidrs: ['10.4.0.0/24', '10.4.1.0/24'], schema: 'v1' });
    expect(await t.meshNode('n1')).toEqual({ name: 'n1', cluster: CLUSTER, addresses: [{ type: 'InternalIP', ip: '172.18.0.2' }], podCidrs: ['10.4.1.0/24'], zone: 'z1' });
    expect(t.nodes.podCidrs()).toEqual(['10.4.0.0/24', '10.4.1.0/24']);
    expect((await t.metrics.exportedNodes.get()).values[0]?.value).toBe(3);

    t.nodes.onNode('delete', node('n1', {}));
    expect(await t.config()).toMatchObject({ podCidrs: ['10.4.0.0/24'] });
    expect(t.kv.data.has(keys.node(CLUSTER, 'n1'))).toBe(false);
    expect(t.nodes.count).toBe(2);
  });

  it('takes all of a node\'s podCIDRs (over its podCIDR)', async () => {
    const t = nodeExport();
    t.nodes.onNode('add', node('n1', { podCIDR: '10.4.2.0/24', podCIDRs: ['10.4.2.0/24', '10.5.2.0/24'] }));
    expect((await t.meshNode('n1')).podCidrs).toEqual(['10.4.2.0/24', '10.5.2.0/24']);
    expect((await t.config()).podCidrs).toEqual(['10.4.2.0/24', '10.5.2.0/24']);
  });

  it('exports a dual-stack node with its IPv4 ranges and says once that the IPv6 ones are not meshed', async () => {
    const t = nodeExport();
    const dual = node('n1', { podCIDR: '10.4.2.0/24', podCIDRs: ['10.4.2.0/24', 'fd00:10:4:2::/64'] });
    t.nodes.onNode('add', dual);
    t.nodes.onNode('update', dual);
    expect((await t.meshNode('n1')).podCidrs).toEqual(['10.4.2.0/24']);
    expect((await t.config()).podCidrs).toEqual(['10.4.2.0/24']);
    expect(t.log.warn).toHaveBeenCalledTimes(1);
    expect(t.log.warn).toHaveBeenCalledWith({ node: 'n1', podCidrs: ['fd00:10:4:2::/64'] }, expect.stringContaining('IPv6 pod CIDRs are not meshed'));
  });

  it('writes a config without pod CIDRs for a cluster without nodes', async () => {
    const t = nodeExport();
    t.nodes.writeConfig();
    expect(await t.config()).toEqual({ name: CLUSTER, id: 3, podCidrs: [], schema: 'v1' });
  });

  it('advertises the configured cluster pod CIDR, so nodes added later are covered, and names a node outside it', async () => {
    const t = nodeExport(['10.4.0.0/16']);
    t.nodes.writeConfig();
    // Before any node exists: what connect pins already covers every future node's range.
    expect((await t.config()).podCidrs).toEqual(['10.4.0.0/16']);
    t.nodes.onNode('add', node('n1', { podCIDR: '10.4.1.0/24' }));
    t.nodes.onNode('add', node('n2', { podCIDR: '10.9.0.0/24' }));
    t.nodes.onNode('update', node('n2', { podCIDR: '10.9.0.0/24' }));
    expect((await t.config()).podCidrs).toEqual(['10.4.0.0/16']);
    expect(t.nodes.podCidrs()).toEqual(['10.4.0.0/16']);
    expect((await t.meshNode('n2')).podCidrs).toEqual(['10.9.0.0/24']);
    expect(t.log.warn).toHaveBeenCalledTimes(1);
    expect(t.log.warn).toHaveBeenCalledWith({ node: 'n2', podCidrs: ['10.9.0.0/24'], clusterPodCidrs: ['10.4.0.0/16'] }, expect.stringContaining('outside --cluster-pod-cidr'));
  });
});
