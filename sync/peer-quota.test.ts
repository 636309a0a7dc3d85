// A peer's import quota and value size limit, through RemoteSync on in-memory fakes (test-fakes.ts): what a
// relist and the watch admit, what they refuse and how it is counted and flagged, and a shrinking peer.
import { describe, expect, it, vi } from 'vitest';
import { LocalNetworks, type RejectReason, type RemoteQuota } from '../mesh/address-policy.js';
import { cachePrefix, exportPrefix, keys } from '../mesh/schema/keys.js';
import type { RemoteSpec } from './peer-connection.js';
import { PeerQuota } from './peer-quota.js';
import { RemoteSync } from './remote-sync.js';
import { LeasedSyncStatus } from './sync-status.js';
import { MemoryKv, MemoryLeaseEtcd, MemoryPeer } from './test-fakes.js';

const REMOTE = 'west';
const spec: RemoteSpec = { name: REMOTE, id: 7, endpoint: 'west.example:2379', caPem: 'ca', certPem: 'c', keyPem: 'k', podCidrs: ['10.7.0.0/16'] };
const service = (name: string, ...ips: string[]) =>
  JSON.stringify({
    cluster: REMOTE,
    namespace: 'default',
    name,
    shared: true,
    affinity: 'none',
    clusterIps: [],
    ports: [],
    backends: ips.map((ip) => ({ ip, ports: {}, ready: true, serving: true, terminating: false })),
  });
const heartbeat = (at: string) => JSON.stringify({ cluster: REMOTE, at });
const svcKey = (name: string) => keys.service(REMOTE, 'default', name);
const toCache = (exportKey: string) => cachePrefix(REMOTE) + exportKey.slice(exportPrefix(REMOTE).length);
const until = (what: () => unknown) => vi.waitFor(() => expect(what()).toBeTruthy(), { timeout: 5_000, interval: 5 });
const cachedServices = (local: MemoryKv) =>
  [...local.data.keys()]
    .filter((k) => k.startsWith(cachePrefix(REMOTE) + 'services/'))
    .map((k) => k.split('/').pop())
    .sort();

/** A peer with a config, a heartbeat and services `names`, put in the order given. */
function peerWith(names: string[]): MemoryPeer {
  const peer = new MemoryPeer();
  peer.put(keys.config(REMOTE), JSON.stringify({ name: REMOTE, id: 7, podCidrs: ['10.7.0.0/16'], schema: 'v1' }));
  peer.put(keys.heartbeat(REMOTE), heartbeat('2030-01-01T00:00:00.000Z'));
  for (const n of names) peer.put(svcKey(n), service(n, '10.7.1.5'));
  return peer;
}

async function synced(peer: MemoryPeer, quota: Partial<RemoteQuota>) {
  const local = new MemoryKv();
  const rejected: RejectReason[] = [];
  const logs: string[] = [];
  const log = { info: (_o: object, m: string) => logs.push(m), warn: (_o: object, m: string) => logs.push(m) };
  const status = new LeasedSyncStatus({ etcd: new MemoryLeaseEtcd(local).ref, log });
  const sync = new RemoteSync({ local, status, localCluster: 'east', remote: spec, log, localNetworks: new LocalNetworks('east'), onRejected: (r) => rejected.push(r), connect: peer.connect, quota, quotaRelistDelayMs: 20 });
  await sync.start();
  await until(() => sync.status().synced);
  return { sync, local, rejected, logs };
}

describe('peer quota', () => {
  it('a relist caches the first keys in key order up to the quota, refuses the rest and flags the peer', async () => {
    const peer = peerWith(['e', 'a', 'd', 'b', 'c']);
    const { sync, local, rejected, logs } = await synced(peer, { maxKeys: 3 });
    expect(cachedServices(local)).toEqual(['a', 'b', 'c']);
    expect(local.data.has(toCache(keys.config(REMOTE)))).toBe(true); // health keys are outside the quota
    expect(sync.status().lastHeartbeat).toBe('2030-01-01T00:00:00.000Z'); // heard (never cached: replicator.ts)
    expect(sync.status().quota).toMatchObject({ keys: 3, maxKeys: 3, overQuota: true, refusedKeys: 2 });
    expect(sync.status().rejectedByReason).toEqual({ 'over-quota': 2 });
    expect(rejected).toEqual(['over-quota', 'over-quota']);
    expect(logs.filter((m) => /over its quota/.test(m))).toHaveLength(1); // one line, not one per key
    await sync.stop(false);
  });

  it('refuses a watch put beyond the quota and counts it, while the heartbeat and updates that fit still go through', async () => {
    const peer = peerWith(['a', 'b']);
    const { sync, local, rejected } = await synced(peer, { maxKeys: 2 });
    expect(sync.status().quota).toMatchObject({ keys: 2, overQuota: false });

    peer.put(svcKey('c'), service('c', '10.7.1.9'));
    peer.put(svcKey('a'), service('a', '10.7.1.6')); // an update of a cached key adds no key
    peer.put(keys.heartbeat(REMOTE), heartbeat('2030-01-01T00:00:05.000Z'));
    await until(() => sync.status().revision === peer.revision);
    await until(() => local.data.get(toCache(svcKey('a'))) === service('a', '10.7.1.6'));
    expect(cachedServices(local)).toEqual(['a', 'b']);
    expect(sync.status().lastHeartbeat).toBe('2030-01-01T00:00:05.000Z');
    expect(rejected).toEqual(['over-quota']);
    expect(sync.status().quota).toMatchObject({ keys: 2, overQuota: true, refusedKeys: 1 });
    await sync.stop(false);
  });

  it('counts bytes: an update that would take the peer over its bytes drops the cached copy', async () => {
    const peer = peerWith(['a', 'b']);
    const entry = Buffer.byteLength(toCache(svcKey('a'))) + Buffer.byteLength(service('a', '10.7.1.5'));
    const { sync, local, rejected } = await synced(peer, { maxBytes: 2 * entry + 10 });
    expect(sync.status().quota).toMatchObject({ keys: 2, bytes: 2 * entry, overQuota: false });

    peer.put(svcKey('b'), service('b', '10.7.1.5', '10.7.1.6')); // one more backend: about 90 bytes more
    await until(() => !local.data.has(toCache(svcKey('b'))));
    expect(cachedServices(local)).toEqual(['a']);
    expect(rejected).toEqual(['over-quota']);
    expect(sync.status().quota).toMatchObject({ keys: 1, bytes: entry, overQuota: true });
    await sync.stop(false);
  });

  it('refuses a value over the size limit as too-large, in a relist and on the watch', async () => {
    const peer = peerWith(['a']);
    const big = service('big', ...Array.from({ length: 40 }, (_, i) => `10.7.2.${i + 1}`));
    peer.put(svcKey('big'), big);
    const { sync, local, rejected } = await synced(peer, { maxValueBytes: 1_024 });
    expect(Buffer.byteLength(big)).toBeGreaterThan(1_024);
    expect(cachedServices(local)).toEqual(['a']);

    peer.put(svcKey('a'), big.replace('"big"', '"a"')); // a cached key turning too large loses its copy
    await until(() => !local.data.has(toCache(svcKey('a'))));
    expect(rejected).toEqual(['too-large', 'too-large']);
    expect(sync.status().quota).toMatchObject({ keys: 0, overQuota: false });
    await sync.stop(false);
  });

  it('admits the refused keys once the peer shrinks (a relist after space frees)', async () => {
    const peer = peerWith(['a', 'b', 'c', 'd', 'e']);
    const { sync, local } = await synced(peer, { maxKeys: 3 });
    expect(cachedServices(local)).toEqual(['a', 'b', 'c']);

    peer.delete(svcKey('a'));
    await until(() => cachedServices(local).join() === 'b,c,d');
    expect(sync.status().quota).toMatchObject({ keys: 3, overQuota: true, refusedKeys: 1 });
    expect(sync.status().relists).toBe(2);

    peer.delete(svcKey('b'));
    await until(() => cachedServices(local).join() === 'c,d,e');
    await until(() => sync.status().quota?.overQuota === false);
    expect(sync.status().quota).toMatchObject({ keys: 3, refusedKeys: 0 });
    expect(sync.status().relists).toBe(3);

    // Within the quota, freed space needs no relist: a new key fits as it comes.
    peer.delete(svcKey('c'));
    peer.put(svcKey('f'), service('f', '10.7.1.5'));
    await until(() => cachedServices(local).join() === 'd,e,f');
    expect(sync.status().relists).toBe(3);
    await sync.stop(false);
  });
});

describe('PeerQuota', () => {
  it('counts replaced values once and forgets refused keys that go away', () => {
    const q = new PeerQuota({ maxKeys: 2, maxBytes: 100, maxValueBytes: 50 });
    expect(q.admit('/a', 40, true)).toBeUndefined();
    expect(q.admit('/a', 45, true)).toBeUndefined(); // replaces its 40
    expect(q.counted).toEqual({ keys: 1, bytes: 45 });
    expect(q.admit('/b', 60, true)).toMatch(/over its quota of 100/);
    expect(q.usage()).toMatchObject({ keys: 1, bytes: 45, overQuota: true, refusedKeys: 1 });
    expect(q.admit('/c', 10, false)).toMatch(/over its quota/); // no new keys while over
    q.release('/b');
    q.release('/c');
    expect(q.overQuota).toBe(false);
    expect(q.admit('/c', 10, true)).toBeUndefined();
    expect(q.admit('/d', 1, true)).toMatch(/quota of 2 cached keys is full/);
  });
});
