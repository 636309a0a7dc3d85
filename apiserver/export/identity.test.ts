import { describe, expect, it } from 'vitest';
import type { V1Pod } from '@kubernetes/client-node';
import { IdentityAllocator, identityLabels, type IdentityStore } from './identity.js';

class MemoryStore implements IdentityStore {
  byHash = new Map<string, number>();
  ids = new Set<number>();
  async lookup(hash: string) {
    return this.byHash.get(hash);
  }
  async tryBind(hash: string, id: number) {
    if (this.byHash.has(hash) || this.ids.has(id)) return false;
    this.byHash.set(hash, id);
    this.ids.add(id);
    return true;
  }
  async boundIds() {
    return new Set(this.ids);
  }
}

const pod = (labels: Record<string, string>, ns = 'default'): V1Pod => ({ metadata: { namespace: ns, labels }, spec: { containers: [], serviceAccountName: 'sa' } });

describe('security identities', () => {
  it('ignores per-instance and placement labels, keeps namespace, service account and cluster', () => {
    const l = identityLabels('east', pod({ app: 'a', 'pod-template-hash': 'x', 'topology.kubernetes.io/zone': 'z' }), { metadata: { labels: { team: 't' } } });
    expect(l).toEqual({
      'k8s:app': 'a',
      'k8s:io.kubernetes.namespace.labels.team': 't',
      'k8s:io.kubernetes.pod.namespace': 'default',
      'k8s:io.kubernetes.pod.serviceaccount': 'sa',
      'k8s:io.skein.cluster': 'east',
    });
  });

  it('puts the cluster ID in bits 16-23 and gives one ID per distinct label set', async () => {
    const alloc = new IdentityAllocator(3, new MemoryStore());
    const [a1, a2, b] = await Promise.all([alloc.allocate({ app: 'a' }), alloc.allocate({ app: 'a' }), alloc.allocate({ app: 'b' })]);
    expect(a1).toBe(a2);
    expect(a1).not.toBe(b);
    expect(a1 >> 16).toBe(3);
    expect(a1 & 0xffff).toBeGreaterThanOrEqual(256);
  });

  it('two allocators sharing a store (an HA pair) agree and never hand out one ID twice', async () => {
    const store = new MemoryStore();
    const [x, y] = [new IdentityAllocator(1, store), new IdentityAllocator(1, store)];
    const ids = await Promise.all([x.allocate({ app: 'a' }), y.allocate({ app: 'b' }), y.allocate({ app: 'a' }), x.allocate({ app: 'c' })]);
    expect(ids[0]).toBe(ids[2]);
    expect(new Set(ids).size).toBe(3);
  });
});
