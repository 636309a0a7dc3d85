import { describe, expect, it, vi } from 'vitest';
import { LocalNetworks, PeerPolicy } from '../mesh/address-policy.js';
import { cachePrefix, exportPrefix, keys } from '../mesh/schema/keys.js';
import { StateWriter } from '../mesh/state-writer.js';
import type { RemoteSpec } from './peer-connection.js';
import { peerJudge } from './peer-judge.js';
import { Replicator } from './replicator.js';
import { MemoryKv, MemoryPeer } from './test-fakes.js';

const REMOTE = 'west';
const spec: RemoteSpec = { name: REMOTE, id: 7, endpoint: 'west.example:2379', caPem: 'ca', certPem: 'c', keyPem: 'k', podCidrs: ['10.7.0.0/16'] };
const until = (what: () => unknown) => vi.waitFor(() => expect(what()).toBeTruthy(), { timeout: 5_000, interval: 5 });
const service = (name: string, ip: string) =>
  JSON.stringify({ cluster: REMOTE, namespace: 'default', name, shared: true, affinity: 'none', clusterIps: [], ports: [], backends: [{ ip, ports: {}, ready: true, serving: true, terminating: false }] });
const toCache = (exportKey: string) => cachePrefix(REMOTE) + exportKey.slice(exportPrefix(REMOTE).length);
const noFailure = (err: Error) => {
  throw err;
};

function setup() {
  const peer = new MemoryPeer();
  const local = new MemoryKv();
  const cache = new StateWriter(local);
  const networks = new LocalNetworks('east');
  const replicator = new Replicator({ remote: REMOTE, cache, judge: peerJudge(REMOTE, new PeerPolicy(spec, networks)), log: { info: () => undefined, warn: () => undefined } });
  return { peer, local, cache, networks, replicator };
}

describe('Replicator', () => {
  it("drops cached keys that this cluster's own networks grew into (revalidate)", async () => {
    const { peer, local, cache, networks, replicator } = setup();
    const a = keys.service(REMOTE, 'default', 'a');
    const b = keys.service(REMOTE, 'default', 'b');
    peer.put(a, service('a', '10.7.1.5'));
    peer.put(b, service('b', '10.7.200.5'));
    const watch = await replicator.sync(peer.connect(spec), noFailure);
    expect([...local.data.keys()].sort()).toEqual([toCache(a), toCache(b)]);

    networks.setPodCidrs(['10.7.200.0/24']); // our own pods now live where b claims a backend
    replicator.revalidate();
    await cache.idle();
    expect([...local.data.keys()]).toEqual([toCache(a)]);
    expect(replicator.rejectedByReason).toEqual({ 'local-cidr': 1 });
    await watch.cancel();
  });

  it('resumes over another source from the last applied revision, without listing', async () => {
    const { peer, local, cache, replicator } = setup();
    const a = keys.service(REMOTE, 'default', 'a');
    peer.put(a, service('a', '10.7.1.5'));
    const first = await replicator.sync(peer.connect(spec), noFailure);
    peer.put(a, service('a', '10.7.1.6'));
    await until(() => replicator.revision === peer.revision);
    await first.cancel();

    // Changes made between the two watches arrive through the second one.
    peer.put(a, service('a', '10.7.1.7'));
    const second = await replicator.resume(peer.connect(spec), noFailure);
    await cache.idle();
    expect(local.data.get(toCache(a))).toBe(service('a', '10.7.1.7'));
    expect(replicator).toMatchObject({ relists: 1, revision: peer.revision, connected: true });
    await second.cancel();
  });
});
