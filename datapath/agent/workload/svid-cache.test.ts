import { X509Certificate } from 'node:crypto';
import { describe, expect, it } from 'vitest';
import { signX509Svid, workloadSpiffeId } from '../../../mtls/svid.js';
import { createCA } from '../../../mtls/x509.js';
import type { PodRef } from '../../../mesh/kube/names.js';
import { identityKey, SvidCache, type SignResult } from './svid-cache.js';

const ca = await createCA({ commonName: 'east workload CA', ttlMs: 86_400_000, uri: 'spiffe://east.skein' });
const log = { info: () => {}, warn: () => {} };
const pod = (name: string, uid: string, namespace = 'default'): PodRef => ({ namespace, name, uid });

/** A node CA in memory: signs for the service account each pod is known to run as, refuses the pods it is told to. */
function fakeNodeCa(ttlMs = 3600_000) {
  const serviceAccounts = new Map<string, string>();
  const refused = new Set<string>();
  const calls: PodRef[][] = [];
  const sign = async (requests: { pod: PodRef; csr: Buffer }[]): Promise<SignResult[]> => {
    calls.push(requests.map((r) => r.pod));
    return Promise.all(
      requests.map(async ({ pod: p, csr }) => {
        if (refused.has(p.uid)) return { error: { code: 7, details: `pod ${p.namespace}/${p.name} has uid ${p.uid}, not it (it was replaced)` } };
        const spiffeId = workloadSpiffeId('east.skein', p.namespace, serviceAccounts.get(p.uid) ?? 'default');
        const svid = await signX509Svid(ca, { spiffeId, csrDer: csr, ttlMs });
        return { svid: { spiffeId, certificateDer: svid.certDer, bundleDer: Buffer.alloc(0), expiresAtMs: svid.expiresAt.getTime() } };
      }),
    );
  };
  return { sign, serviceAccounts, refused, calls };
}

/** Polls (bounded: 10 s) until `done` holds; the tests assert what happened, not how fast. */
async function until(done: () => boolean): Promise<void> {
  for (const deadline = Date.now() + 10_000; !done(); await new Promise((r) => setTimeout(r, 50))) {
    if (Date.now() > deadline) throw new Error('timed out after 10 s');
  }
}

describe('SvidCache: SVIDs made before the pods ask', () => {
  it('signs the identities of pods bound in one moment in one node-CA call, and serves them without another', async () => {
    const ca = fakeNodeCa();
    ca.serviceAccounts.set('u2', 'api');
    const cache = new SvidCache({ sign: ca.sign, log });
    cache.podBound(pod('a', 'u1'), 'default');
    cache.podBound(pod('b', 'u2'), 'api');
    cache.podBound(pod('c', 'u3'), 'default'); // same identity as a: no second SVID
    await until(() => cache.stats.issued === 2);
    expect(ca.calls).toHaveLength(1);
    expect(ca.calls[0]!.map((p) => p.name)).toEqual(['a', 'b']);
    const a = await cache.get(identityKey('default', 'default'));
    const b = await cache.get(identityKey('default', 'api'));
    expect(a.spiffeId).toBe('spiffe://east.skein/ns/default/sa/default');
    expect(b.spiffeId).toBe('spiffe://east.skein/ns/default/sa/api');
    // The key made on the node matches the certificate the CA signed.
    expect(new X509Certificate(a.certChainDer).publicKey.export({ format: 'jwk' })).toMatchObject({ crv: 'P-256' });
    expect(ca.calls).toHaveLength(1);
    expect(cache.stats).toMatchObject({ preIssued: 2, issued: 2, signCalls: 1, servedFromCache: 2, servedAfterSigning: 0 });
    cache.stop();
  });

  it('a caller arriving while its SVID is being signed waits for that signing, not a second one', async () => {
    const ca = fakeNodeCa();
    const cache = new SvidCache({ sign: ca.sign, log });
    cache.podBound(pod('a', 'u1'), 'default');
    const entry = await cache.get(identityKey('default', 'default'));
    expect(entry.spiffeId).toMatch(/sa\/default$/);
    expect(ca.calls).toHaveLength(1);
    expect(cache.stats).toMatchObject({ servedAfterSigning: 1, servedFromCache: 0 });
    cache.stop();
  });

  it('keeps an identity while any of its pods is left, drops it with the last, and then serves no one', async () => {
    const ca = fakeNodeCa();
    const cache = new SvidCache({ sign: ca.sign, log });
    cache.podBound(pod('a', 'u1'), 'default');
    cache.podBound(pod('b', 'u2'), 'default');
    await until(() => cache.stats.issued === 1);
    cache.podGone('u1');
    expect(cache.held()).toEqual([expect.objectContaining({ identity: 'default/default', pods: 1, spiffeId: expect.stringContaining('sa/default') })]);
    cache.podGone('u2');
    expect(cache.held()).toEqual([]);
    expect(cache.stats.dropped).toBe(1);
    await expect(cache.get(identityKey('default', 'default'))).rejects.toThrow(/no pod of default\/default is bound to this node/);
    // A pod of it bound again gets a fresh SVID.
    cache.podBound(pod('c', 'u3'), 'default');
    await until(() => cache.stats.issued === 2);
    expect(ca.calls.map((c) => c.map((p) => p.name))).toEqual([['a'], ['c']]);
    cache.stop();
  });

  it('one refused pod does not fail the others in its batch, and its identity is signed through another pod', async () => {
    const ca = fakeNodeCa();
    ca.refused.add('u1');
    const cache = new SvidCache({ sign: ca.sign, log });
    cache.podBound(pod('a', 'u1'), 'default');
    cache.podBound(pod('b', 'u2', 'other'), 'default');
    await until(() => cache.stats.issued === 1 && cache.stats.signFailures === 1);
    expect((await cache.get(identityKey('other', 'default'))).spiffeId).toBe('spiffe://east.skein/ns/other/sa/default');
    expect(cache.stats.signFailures).toBe(1);
    // Asked for anyway, it signs again (not through the refused pod once that pod is gone).
    cache.podBound(pod('c', 'u3'), 'default');
    cache.podGone('u1');
    expect((await cache.get(identityKey('default', 'default'))).spiffeId).toBe('spiffe://east.skein/ns/default/sa/default');
    expect(ca.calls.at(-1)!.map((p) => p.name)).toEqual(['c']);
    cache.stop();
  });

  it('signs everything held again in one call when asked (a new node CA), and tells the streams', async () => {
    const ca = fakeNodeCa();
    const cache = new SvidCache({ sign: ca.sign, log });
    cache.podBound(pod('a', 'u1'), 'default');
    cache.podBound(pod('b', 'u2'), 'api');
    await until(() => cache.stats.issued === 2);
    let told = 0;
    cache.subscribe(identityKey('default', 'api'), () => told++);
    cache.renewAll();
    await until(() => cache.stats.renewed === 2);
    expect(ca.calls.map((c) => c.length)).toEqual([2, 2]);
    expect(told).toBe(1);
    cache.stop();
  });

  it('renews at half-life and tells the identity’s streams', async () => {
    const ca = fakeNodeCa(2400); // renewed after ~1.2 s
    const cache = new SvidCache({ sign: ca.sign, log });
    cache.podBound(pod('a', 'u1'), 'default');
    const first = await cache.get(identityKey('default', 'default'));
    let told = 0;
    cache.subscribe(identityKey('default', 'default'), () => told++);
    await until(() => cache.stats.renewed === 1);
    const second = await cache.get(identityKey('default', 'default'));
    expect(told).toBe(1);
    expect(cache.stats.renewed).toBe(1);
    expect(new X509Certificate(second.certChainDer).serialNumber).not.toBe(new X509Certificate(first.certChainDer).serialNumber);
    cache.stop();
  });

  it('re-issues every SVID held when another CA signs (a rotation’s activate), telling its streams and the view', async () => {
    const next = await createCA({ commonName: 'east workload CA 2', ttlMs: 86_400_000, uri: 'spiffe://east.skein' });
    let signing = ca;
    const sign = async (requests: { pod: PodRef; csr: Buffer }[]): Promise<SignResult[]> =>
      Promise.all(
        requests.map(async ({ pod: p, csr }) => {
          const spiffeId = workloadSpiffeId('east.skein', p.namespace, p.name);
          const svid = await signX509Svid(signing, { spiffeId, csrDer: csr });
          return { svid: { spiffeId, certificateDer: svid.certDer, bundleDer: Buffer.alloc(0), expiresAtMs: svid.expiresAt.getTime() } };
        }),
      );
    let signed = 0;
    const cache = new SvidCache({ sign, log, onSigned: () => signed++ });
    cache.podBound(pod('a', 'u1'), 'a');
    cache.podBound(pod('b', 'u2'), 'b');
    await until(() => signed === 2);
    const by = (c: { certPem: string }) => cache.certificates().filter((der) => new X509Certificate(der).verify(new X509Certificate(c.certPem).publicKey)).length;
    expect([by(ca), by(next)]).toEqual([2, 0]);
    let pushed = 0;
    cache.subscribe(identityKey('default', 'a'), () => pushed++);
    signing = next;
    cache.renewAll();
    await until(() => signed === 4);
    expect([by(ca), by(next)]).toEqual([0, 2]);
    expect(pushed).toBe(1);
    expect(cache.stats).toMatchObject({ issued: 2, renewed: 2 });
    cache.stop();
  });
});

