// A peer's trust bundle as it exports it (keys.exportedBundle): how its CA rotation reaches us. Written as the
// peer turned attacker: it may publish only its own trust domain's bundle, every CA of it valid; anything
// else is refused (counted as `bad-bundle` or `schema`), never cached, and the last good bundle stays.
import { describe, expect, it, vi } from 'vitest';
import { LocalNetworks, type RejectReason } from '../mesh/address-policy.js';
import { cachePrefix, keys } from '../mesh/schema/keys.js';
import { createCA } from '../mtls/x509.js';
import type { RemoteSpec } from './peer-connection.js';
import { RemoteSync } from './remote-sync.js';
import { LeasedSyncStatus } from './sync-status.js';
import { MemoryKv, MemoryLeaseEtcd, MemoryPeer } from './test-fakes.js';

const REMOTE = 'west';
const spec: RemoteSpec = { name: REMOTE, id: 7, endpoint: 'west.example:2379', caPem: 'ca', certPem: 'c', keyPem: 'k', podCidrs: ['10.7.0.0/16'] };
const [oldCa, newCa, eastCa, meshCa, expired] = await Promise.all([
  createCA({ commonName: 'west old', ttlMs: 3600_000, uri: 'spiffe://west.skein' }),
  createCA({ commonName: 'west new', ttlMs: 3600_000, uri: 'spiffe://west.skein' }),
  createCA({ commonName: 'forged east', ttlMs: 3600_000, uri: 'spiffe://east.skein' }),
  createCA({ commonName: 'no spiffe id', ttlMs: 3600_000 }),
  createCA({ commonName: 'west expired', ttlMs: -1000, uri: 'spiffe://west.skein' }),
]);
const bundle = (caPem: string, trustDomain = 'west.skein', cluster = REMOTE) => JSON.stringify({ cluster, trustDomain, caPem });

function setup(peer: MemoryPeer) {
  const local = new MemoryKv();
  const log = { info: () => {}, warn: () => {} };
  const rejected: RejectReason[] = [];
  const bundles: string[] = [];
  const sync = new RemoteSync({
    local,
    status: new LeasedSyncStatus({ etcd: new MemoryLeaseEtcd(local).ref, log }),
    localCluster: 'east',
    remote: spec,
    log,
    localNetworks: new LocalNetworks('east'),
    onRejected: (r) => rejected.push(r),
    onBundle: (pem) => bundles.push(pem),
    connect: peer.connect,
  });
  return { sync, local, rejected, bundles };
}

const until = (what: () => unknown) => vi.waitFor(() => expect(what()).toBeTruthy(), { timeout: 5_000, interval: 5 });

describe("a peer's exported trust bundle", () => {
  it('follows a rotation: old, old + new, new; never cached, outside the quota', async () => {
    const peer = new MemoryPeer();
    peer.put(keys.exportedBundle(REMOTE), bundle(oldCa.certPem));
    const { sync, local, bundles, rejected } = setup(peer);
    await sync.start();
    await until(() => bundles.length === 1);
    peer.put(keys.exportedBundle(REMOTE), bundle(oldCa.certPem + newCa.certPem));
    await until(() => bundles.length === 2);
    peer.put(keys.exportedBundle(REMOTE), bundle(newCa.certPem));
    await until(() => bundles.length === 3);
    expect(bundles).toEqual([oldCa.certPem, oldCa.certPem + newCa.certPem, newCa.certPem]);
    expect(rejected).toEqual([]);
    expect([...local.data.keys()].filter((k) => k.startsWith(cachePrefix(REMOTE)))).toEqual([]);
    expect(sync.status().quota?.keys).toBe(0);
    await sync.stop(true);
  });

  it.each([
    ['another trust domain (ours)', bundle(eastCa.certPem, 'east.skein'), 'bad-bundle'],
    ['its own trust domain with a CA of another', bundle(eastCa.certPem), 'bad-bundle'],
    ['a CA without a SPIFFE ID', bundle(meshCa.certPem), 'bad-bundle'],
    ['its good CA next to a forged one', bundle(newCa.certPem + eastCa.certPem), 'bad-bundle'],
    ['an expired CA', bundle(expired.certPem), 'bad-bundle'],
    ['garbage between PEM markers', bundle('-----BEGIN CERTIFICATE-----\nZ2FyYmFnZQ==\n-----END CERTIFICATE-----\n'), 'bad-bundle'],
    ['the same CA five times', bundle(newCa.certPem.repeat(5)), 'bad-bundle'],
    ['no certificate at all', bundle(''), 'schema'],
    ['a bundle naming another cluster', bundle(newCa.certPem, 'west.skein', 'east'), 'schema'],
    ['not JSON', '{', 'schema'],
  ])('refuses %s and keeps the last good bundle', async (_what, value, reason) => {
    const peer = new MemoryPeer();
    peer.put(keys.exportedBundle(REMOTE), bundle(oldCa.certPem));
    const { sync, bundles, rejected } = setup(peer);
    await sync.start();
    await until(() => bundles.length === 1);
    peer.put(keys.exportedBundle(REMOTE), value);
    await until(() => rejected.length === 1);
    expect(rejected).toEqual([reason]);
    expect(bundles).toEqual([oldCa.certPem]);
    // Refused at a relist too (a restart reads it again): still nothing handed on.
    await sync.stop(false);
    const again = setup(peer);
    await again.sync.start();
    await until(() => again.rejected.length === 1);
    expect(again.bundles).toEqual([]);
    await again.sync.stop(true);
  });
});
