// RemoteSync and its units (connection, replicator, judge, health) on in-memory fakes (test-fakes.ts): a peer
// behind PeerSource and the local mesh etcd behind KvBackend (its leases: MemoryLeaseEtcd).
import { describe, expect, it, vi } from 'vitest';
import { LocalNetworks, type RejectReason } from '../mesh/address-policy.js';
import { credentialKey } from '../mesh/credentials.js';
import { cachePrefix, exportPrefix, keys } from '../mesh/schema/keys.js';
import type { RemoteSpec } from './peer-connection.js';
import { RemoteSync } from './remote-sync.js';
import { LeasedSyncStatus } from './sync-status.js';
import { COMPACTED, MemoryKv, MemoryLeaseEtcd, MemoryPeer } from './test-fakes.js';

const REMOTE = 'west';
const LOCAL = 'east';
const cert = (n: number) => `-----BEGIN CERTIFICATE-----\n${n}\n-----END CERTIFICATE-----`;
const key = (n: number) => `-----BEGIN PRIVATE KEY-----\n${n}\n-----END PRIVATE KEY-----`;
const spec: RemoteSpec = { name: REMOTE, id: 7, endpoint: 'west.example:2379', caPem: 'ca', certPem: cert(1), keyPem: key(1), podCidrs: ['10.7.0.0/16'] };

const identityId = (cluster: number, n: number) => cluster * 65536 + n;
const service = (name: string, ...ips: string[]) =>
  JSON.stringify({
    cluster: REMOTE,
    namespace: 'default',
    name,
    shared: true,
    affinity: 'none',
    clusterIps: ['10.97.0.10'],
    ports: [{ name: 'http', port: 80, protocol: 'TCP' }],
    backends: ips.map((ip) => ({ ip, ports: { http: { port: 8080, protocol: 'TCP' } }, ready: true, serving: true, terminating: false })),
  });
const node = (name: string) => JSON.stringify({ name, cluster: REMOTE, addresses: [{ type: 'InternalIP', ip: '192.168.7.1' }], podCidrs: ['10.7.1.0/24'] });
const identity = (id: number) => JSON.stringify({ id, labels: { app: 'echo' } });
const toCache = (exportKey: string) => cachePrefix(REMOTE) + exportKey.slice(exportPrefix(REMOTE).length);

/** A peer exporting a config, a heartbeat, one service, one node and one identity. */
function healthyPeer(): MemoryPeer {
  const peer = new MemoryPeer();
  peer.put(keys.config(REMOTE), JSON.stringify({ name: REMOTE, id: 7, podCidrs: ['10.7.0.0/16'], schema: 'v1' }));
  peer.put(keys.heartbeat(REMOTE), JSON.stringify({ cluster: REMOTE, at: new Date().toISOString() }));
  peer.put(keys.service(REMOTE, 'default', 'echo'), service('echo', '10.7.1.5'));
  peer.put(keys.node(REMOTE, 'n1'), node('n1'));
  peer.put(keys.identity(REMOTE, identityId(7, 100)), identity(identityId(7, 100)));
  return peer;
}

function setup(peer: MemoryPeer, extra: { local?: MemoryKv; removeAfterMs?: number } = {}) {
  const local = extra.local ?? new MemoryKv();
  const logs: { msg: string; o: object }[] = [];
  const log = { info: (o: object, msg: string) => logs.push({ msg, o }), warn: (o: object, msg: string) => logs.push({ msg, o }) };
  const rejected: RejectReason[] = [];
  const stored: string[] = [];
  const networks = new LocalNetworks(LOCAL, '10.96.0.0/12');
  networks.setPodCidrs(['10.1.0.0/16']);
  const sync = new RemoteSync({
    local,
    status: new LeasedSyncStatus({ etcd: new MemoryLeaseEtcd(local).ref, log }),
    localCluster: LOCAL,
    remote: spec,
    log,
    localNetworks: networks,
    onRejected: (r) => rejected.push(r),
    onCredentials: (c) => stored.push(c.certPem),
    removeAfterMs: extra.removeAfterMs,
    connect: peer.connect,
  });
  return { sync, local, logs, rejected, stored };
}

const cachedKeys = (local: MemoryKv) => [...local.data.keys()].filter((k) => k.startsWith(cachePrefix(REMOTE))).sort();
/** What the cache must hold of the peer's export: all of it but the heartbeat (never cached: replicator.ts). */
const cacheOf = (peer: MemoryPeer) => peer.list(exportPrefix(REMOTE)).kvs.map((kv) => kv.key).filter((k) => k !== keys.heartbeat(REMOTE)).map(toCache).sort();
const until = (what: () => unknown) => vi.waitFor(() => expect(what()).toBeTruthy(), { timeout: 5_000, interval: 5 });

describe('RemoteSync replication', () => {
  it('caches what the peer exports, and the sync status agents act on', async () => {
    const peer = healthyPeer();
    const { sync, local } = setup(peer);
    await sync.start();
    await until(() => sync.status().synced);
    expect(cachedKeys(local)).toEqual(cacheOf(peer));
    expect(sync.status()).toMatchObject({ cluster: REMOTE, connected: true, synced: true, stale: false, relists: 1, rejected: 0, services: 1, nodes: 1, identities: 1, ips: 0, revision: peer.revision });
    expect(JSON.parse(local.data.get(keys.syncStatus(REMOTE))!)).toEqual({ cluster: REMOTE, connected: true, synced: true, stale: false });

    peer.put(keys.service(REMOTE, 'default', 'web'), service('web', '10.7.2.9'));
    peer.delete(keys.node(REMOTE, 'n1'));
    await until(() => local.data.has(toCache(keys.service(REMOTE, 'default', 'web'))) && !local.data.has(toCache(keys.node(REMOTE, 'n1'))));
    expect(sync.status()).toMatchObject({ revision: peer.revision, services: 2, nodes: 0 });
    await sync.stop(false);
  });

  it('hears every heartbeat but never caches it: a beat writes nothing to the local etcd, and a copy an older version cached goes', async () => {
    const peer = healthyPeer();
    const local = new MemoryKv();
    local.data.set(toCache(keys.heartbeat(REMOTE)), JSON.stringify({ cluster: REMOTE, at: '2029-01-01T00:00:00.000Z' }));
    const { sync } = setup(peer, { local });
    await sync.start();
    await until(() => sync.status().synced && !local.data.has(toCache(keys.heartbeat(REMOTE))));
    await until(() => sync.status().revisionLag === 0);
    const before = local.batches.length;
    for (let i = 1; i <= 5; i++) {
      const at = new Date(Date.now() + i * 500).toISOString();
      peer.put(keys.heartbeat(REMOTE), JSON.stringify({ cluster: REMOTE, at }));
      await until(() => sync.status().lastHeartbeat === at);
    }
    expect(sync.status().revision).toBe(peer.revision);
    expect(local.writesSince(before)).toEqual([]);
    expect(local.data.has(toCache(keys.heartbeat(REMOTE)))).toBe(false);
    await sync.stop(false);
  });

  it('refuses foreign keys, schema failures and what PeerPolicy forbids: counted per reason, never cached', async () => {
    const peer = healthyPeer();
    const bad: [string, string, RejectReason][] = [
      [`${exportPrefix(REMOTE)}secrets/token`, '{}', 'foreign-key'],
      [keys.service(REMOTE, 'default', 'broken'), '{"cluster":"west"', 'schema'],
      [keys.service(REMOTE, 'default', 'metadata'), service('metadata', '169.254.169.254'), 'forbidden-address'],
      [keys.service(REMOTE, 'default', 'ours'), service('ours', '10.1.3.4'), 'local-cidr'],
      [keys.service(REMOTE, 'default', 'elsewhere'), service('elsewhere', '10.9.0.1'), 'outside-pinned-cidrs'],
      [keys.identity(REMOTE, identityId(3, 1)), identity(identityId(3, 1)), 'wrong-cluster-id'],
    ];
    for (const [k, v] of bad.slice(0, 3)) peer.put(k, v);
    const { sync, local, logs, rejected } = setup(peer);
    await sync.start();
    await until(() => sync.status().synced);
    // The rest arrive through the watch.
    for (const [k, v] of bad.slice(3)) peer.put(k, v);
    await until(() => sync.status().rejected === bad.length);

    expect(sync.status().rejectedByReason).toEqual(Object.fromEntries(bad.map(([, , reason]) => [reason, 1])));
    expect(rejected.sort()).toEqual(bad.map(([, , reason]) => reason).sort());
    for (const [k] of bad) expect(local.data.has(toCache(k)), k).toBe(false);
    expect(cachedKeys(local)).toHaveLength(4); // config, service, node, identity (the heartbeat is not cached)
    expect(logs.filter((l) => l.msg === 'rejected a remote key')).toHaveLength(bad.length);
    await sync.stop(false);
  });

  it('removes a cached key that turns bad, and keeps it out after a relist', async () => {
    const peer = healthyPeer();
    const { sync, local } = setup(peer);
    await sync.start();
    await until(() => sync.status().synced);
    const echo = keys.service(REMOTE, 'default', 'echo');
    expect(local.data.has(toCache(echo))).toBe(true);

    peer.put(echo, service('echo', '10.7.1.5', '127.0.0.1'));
    await until(() => !local.data.has(toCache(echo)));
    expect(sync.status()).toMatchObject({ rejected: 1, rejectedByReason: { 'forbidden-address': 1 }, services: 0 });

    peer.put(echo, service('echo', '10.7.1.6'));
    await until(() => local.data.get(toCache(echo)) === service('echo', '10.7.1.6'));
    await sync.stop(false);
  });

  it('after a compaction it relists and writes only the real difference', async () => {
    const peer = healthyPeer();
    const { sync, local, logs } = setup(peer);
    await sync.start();
    await until(() => sync.status().synced && peer.watches.size === 2); // the export and the credential
    const before = local.batches.length;

    // While the peer is unreachable: one change, one delete, one addition, then the history is compacted.
    peer.setOffline(true);
    await until(() => !sync.status().connected);
    peer.put(keys.service(REMOTE, 'default', 'echo'), service('echo', '10.7.1.5', '10.7.1.6'));
    peer.delete(keys.node(REMOTE, 'n1'));
    peer.put(keys.identity(REMOTE, identityId(7, 101)), identity(identityId(7, 101)));
    peer.put(keys.service(REMOTE, 'default', 'echo'), service('echo', '10.7.1.6'));
    peer.compact();
    peer.setOffline(false);

    // revisionLag counts writes not yet in the local etcd too.
    await until(() => sync.status().relists === 2 && sync.status().revisionLag === 0);
    expect(logs.some((l) => l.msg === 'remote watch failed, relisting' && (l.o as { err: string }).err === COMPACTED)).toBe(true);
    expect(local.writesSince(before).filter((w) => w.startsWith(cachePrefix(REMOTE)))).toEqual([
      `${toCache(keys.identity(REMOTE, identityId(7, 101)))}=set`,
      `${toCache(keys.node(REMOTE, 'n1'))}=deleted`,
      `${toCache(keys.service(REMOTE, 'default', 'echo'))}=set`,
    ]);
    expect(cachedKeys(local)).toEqual(cacheOf(peer));
    expect(sync.status()).toMatchObject({ connected: true, revision: peer.revision, lastError: undefined });

    // And it watches again from there.
    peer.delete(keys.service(REMOTE, 'default', 'echo'));
    await until(() => !local.data.has(toCache(keys.service(REMOTE, 'default', 'echo'))));
    expect(sync.status().relists).toBe(2);
    await sync.stop(false);
  });

  it('retries an unreachable peer until it answers', async () => {
    const peer = healthyPeer();
    peer.setOffline(true);
    const { sync, logs } = setup(peer);
    await sync.start();
    await until(() => sync.status().lastError?.includes('UNAVAILABLE'));
    expect(sync.status()).toMatchObject({ connected: false, synced: false, stale: false, relists: 0 });
    peer.setOffline(false);
    await until(() => sync.status().synced);
    expect(sync.status()).toMatchObject({ connected: true, relists: 1, lastError: undefined });
    expect(logs.filter((l) => l.msg === 'remote sync failed, retrying').length).toBeGreaterThanOrEqual(1);
    await sync.stop(false);
  });

  it('at start, drops cached keys this pin refuses before the peer answers', async () => {
    const local = new MemoryKv();
    const good = toCache(keys.service(REMOTE, 'default', 'echo'));
    const widened = toCache(keys.service(REMOTE, 'default', 'wide'));
    local.data.set(good, service('echo', '10.7.1.5'));
    local.data.set(widened, service('wide', '10.8.0.1'));
    const peer = healthyPeer();
    peer.setOffline(true);
    const { sync } = setup(peer, { local });
    await sync.start();
    await until(() => !local.data.has(widened));
    expect(local.data.has(good)).toBe(true);
    expect(sync.status()).toMatchObject({ synced: false, rejectedByReason: { 'outside-pinned-cidrs': 1 } });
    await sync.stop(false);
  });

  it('stop(true) removes the cached state and the sync status', async () => {
    const peer = healthyPeer();
    const { sync, local } = setup(peer);
    await sync.start();
    await until(() => sync.status().synced);
    await sync.stop(true);
    expect(cachedKeys(local)).toEqual([]);
    expect(local.data.has(keys.syncStatus(REMOTE))).toBe(false);
    expect(peer.connections.every((c) => c.closed)).toBe(true);
  });
});

describe('RemoteSync identity renewal', () => {
  const renewal = (n: number) => JSON.stringify({ certPem: cert(n), keyPem: key(n) });

  it('switches to a renewed identity the peer issues without a relist, and replicates over it', async () => {
    const peer = healthyPeer();
    const { sync, local, stored, logs } = setup(peer);
    await sync.start();
    await until(() => sync.status().synced);

    peer.put(credentialKey(REMOTE, LOCAL), renewal(2));
    await until(() => sync.status().rotations === 1);
    expect(peer.connections.map((c) => [c.certPem, c.closed])).toEqual([
      [cert(1), true],
      [cert(2), false],
    ]);
    expect(sync.spec.certPem).toBe(cert(2));
    expect(stored).toEqual([cert(2)]);
    expect(logs.some((l) => l.msg === 'switched to a renewed identity')).toBe(true);

    // The old identity no longer works; replication goes on over the new one, from where it was.
    peer.refused.add(cert(1));
    peer.put(keys.service(REMOTE, 'default', 'echo'), service('echo', '10.7.1.8'));
    await until(() => local.data.get(toCache(keys.service(REMOTE, 'default', 'echo'))) === service('echo', '10.7.1.8'));
    expect(sync.status()).toMatchObject({ relists: 1, rotations: 1, connected: true, revision: peer.revision });
    await sync.stop(false);
  });

  it('adopts the same identity from the link Secret once, and keeps the old one when the peer refuses the new', async () => {
    const peer = healthyPeer();
    const { sync } = setup(peer);
    await sync.start();
    await until(() => sync.status().synced);

    await sync.adopt({ certPem: cert(1), keyPem: key(1) }); // what it already has: nothing to do
    await sync.adopt('not json');
    expect(peer.connections).toHaveLength(1);

    peer.refused.add(cert(3));
    await sync.adopt({ certPem: cert(3), keyPem: key(3) });
    expect(sync.status()).toMatchObject({ rotations: 0, relists: 1, connected: true });
    expect(sync.status().lastError).toMatch(/^identity renewal: .*PERMISSION_DENIED/);
    expect(sync.spec.certPem).toBe(cert(1));
    expect(peer.connections.map((c) => c.closed)).toEqual([false, true]);
    await sync.stop(false);
  });

  it('picks up an identity issued while it was not watching at the end of its next sync', async () => {
    const peer = healthyPeer();
    peer.put(credentialKey(REMOTE, LOCAL), renewal(2));
    const { sync } = setup(peer);
    await sync.start();
    await until(() => sync.status().rotations === 1);
    expect(sync.status()).toMatchObject({ relists: 1, synced: true });
    expect(sync.spec.certPem).toBe(cert(2));
    await sync.stop(false);
  });
});
