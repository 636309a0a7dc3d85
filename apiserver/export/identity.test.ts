import { describe, expect, it } from 'vitest';
import type { Pod } from '../../mesh/kube/objects.js';
import { IdentityAllocator, IdentitySpaceExhaustedError, identityLabels, identityNumber, labelsHash } from './identity.js';
import { MemoryIdentityStore } from './test-fakes.js';

const pod = (labels: Record<string, string>, ns = 'default'): Pod => ({ metadata: { namespace: ns, labels }, spec: { containers: [], serviceAccountName: 'sa' } });

const GRACE = 60_000;
function setup(o: { first?: number; last?: number; store?: MemoryIdentityStore } = {}) {
  const clock = { t: 1_000_000 };
  const store = o.store ?? new MemoryIdentityStore();
  const alloc = new IdentityAllocator(9, store, { firstLocalId: o.first, lastLocalId: o.last, gcGraceMs: GRACE, now: () => clock.t });
  return { clock, store, alloc };
}

describe('security identity labels', () => {
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

  it('gives every run of a Job (and every StatefulSet ordinal) the same label set', () => {
    const run = (uid: string, job: string, index: string) =>
      identityLabels('east', pod({ app: 'batch', 'controller-uid': uid, 'batch.kubernetes.io/controller-uid': uid, 'job-name': job, 'batch.kubernetes.io/job-name': job, 'batch.kubernetes.io/job-completion-index': index }), undefined);
    const first = run('0b6c1d2e', 'report-28934561', '0');
    expect(run('9f8e7d6c', 'report-28934562', '3')).toEqual(first);
    expect(first).toEqual(identityLabels('east', pod({ app: 'batch' }), undefined));
    const ordinal = (n: string) => identityLabels('east', pod({ app: 'db', 'statefulset.kubernetes.io/pod-name': `db-${n}`, 'apps.kubernetes.io/pod-index': n, 'controller-revision-hash': `db-${n}` }), undefined);
    expect(ordinal('0')).toEqual(ordinal('7'));
    // A label that is not per-instance still tells workloads apart.
    expect(identityLabels('east', pod({ app: 'batch', tier: 'x' }), undefined)).not.toEqual(first);
  });
});

describe('identity allocation', () => {
  it('puts the cluster ID in bits 16-23 and gives one ID per distinct label set', async () => {
    const { alloc } = setup();
    const [a1, a2, b] = await Promise.all([alloc.allocate({ app: 'a' }), alloc.allocate({ app: 'a' }), alloc.allocate({ app: 'b' })]);
    expect(a1).toBe(a2);
    expect(a1).not.toBe(b);
    expect(a1 >> 16).toBe(9);
    expect(a1 & 0xffff).toBeGreaterThanOrEqual(256);
  });

  it('two allocators sharing a store (an HA pair) agree and never hand out one ID twice', async () => {
    const store = new MemoryIdentityStore();
    const [x, y] = [new IdentityAllocator(1, store), new IdentityAllocator(1, store)];
    const ids = await Promise.all([x.allocate({ app: 'a' }), y.allocate({ app: 'b' }), y.allocate({ app: 'a' }), x.allocate({ app: 'c' })]);
    expect(ids[0]).toBe(ids[2]);
    expect(new Set(ids).size).toBe(3);
  });

  it('refuses a range outside 1..65535, naming the fix', () => {
    expect(() => setup({ first: 10, last: 5 })).toThrow(/local ID range 10\.\.5: give integers with 1 <= first <= last <= 65535/);
    expect(() => setup({ first: 256, last: 70_000 })).toThrow(/local ID range 256\.\.70000/);
  });
});

describe('a full identity space', () => {
  it('fails a new label set with IdentitySpaceExhaustedError instead of looping, and keeps serving known ones', async () => {
    const { alloc, store } = setup({ first: 256, last: 258 });
    const known = await Promise.all([alloc.allocate({ app: 'a' }), alloc.allocate({ app: 'b' }), alloc.allocate({ app: 'c' })]);
    expect(known.map((id) => id & 0xffff).sort()).toEqual([256, 257, 258]);
    const err = await alloc.allocate({ app: 'd' }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(IdentitySpaceExhaustedError);
    expect(err).toMatchObject({ clusterId: 9, capacity: 3 });
    expect((err as Error).message).toMatch(/no free security identity in cluster 9: all 3 local IDs are bound .* --identity-gc-grace/);
    // Failing did not try any binding, and later allocations are not stuck behind it.
    expect(store.calls.tryBind).toBe(3);
    await expect(alloc.allocate({ app: 'e' })).rejects.toBeInstanceOf(IdentitySpaceExhaustedError);
    expect(await alloc.allocate({ app: 'b' })).toBe(known[1]);
    expect({ bound: alloc.bound, capacity: alloc.capacity }).toEqual({ bound: 3, capacity: 3 });
  });

  it('also fails when another allocator filled the space behind this one (bounded binding attempts)', async () => {
    const store = new MemoryIdentityStore();
    const y = setup({ first: 256, last: 258, store }).alloc;
    const x = setup({ first: 256, last: 258, store }).alloc;
    await y.allocate({ app: 'a' }); // y has now loaded its view of the used IDs: only its own
    await x.allocate({ app: 'b' });
    await x.allocate({ app: 'c' });
    const before = store.calls.tryBind;
    await expect(y.allocate({ app: 'd' })).rejects.toBeInstanceOf(IdentitySpaceExhaustedError);
    expect(store.calls.tryBind - before).toBe(2); // each stale-free ID tried once, then a clear failure
  });
});

describe('identity garbage collection', () => {
  it('releases an identity unused for the grace, not before, and hands its ID out again', async () => {
    const { alloc, store, clock } = setup({ first: 256, last: 256 });
    const a = await alloc.allocate({ app: 'a' });
    alloc.markInUse(a);
    clock.t += 10 * GRACE;
    expect(await alloc.collectGarbage()).toEqual([]); // in use: never released, however long
    alloc.markUnused(a);
    clock.t += GRACE - 1;
    expect(await alloc.collectGarbage()).toEqual([]);
    await expect(alloc.allocate({ app: 'b' })).rejects.toBeInstanceOf(IdentitySpaceExhaustedError);
    clock.t += 1;
    expect(await alloc.collectGarbage()).toEqual([a]);
    expect(store.byHash.size + store.ids.size).toBe(0);
    expect(alloc.bound).toBe(0);
    // The one ID of this space now belongs to another label set.
    const b = await alloc.allocate({ app: 'b' });
    expect(b).toBe(a);
    expect(store.byHash.get(labelsHash({ app: 'b' }))).toBe(a & 0xffff);
  });

  it('keeps an identity a pod took up again within the grace', async () => {
    const { alloc, store, clock } = setup();
    const a = await alloc.allocate({ app: 'a' });
    alloc.markInUse(a);
    alloc.markUnused(a);
    clock.t += GRACE / 2;
    expect(await alloc.allocate({ app: 'a' })).toBe(a);
    alloc.markInUse(a);
    clock.t += 2 * GRACE;
    expect(await alloc.collectGarbage()).toEqual([]);
    expect(store.byHash.get(labelsHash({ app: 'a' }))).toBe(a & 0xffff);
  });

  it('treats handing an identity out as a use, so a sweep before the caller marks it cannot release it', async () => {
    const { alloc, clock } = setup();
    const a = await alloc.allocate({ app: 'a' });
    alloc.markInUse(a);
    alloc.markUnused(a);
    clock.t += GRACE + 1;
    expect(await alloc.allocate({ app: 'a' })).toBe(a); // not marked in use yet
    expect(await alloc.collectGarbage()).toEqual([]);
  });

  it('after a restart, releases bindings of an earlier process that no pod uses, a grace after first seeing them', async () => {
    const store = new MemoryIdentityStore();
    const before = setup({ store }).alloc;
    const [old, kept] = [await before.allocate({ app: 'gone' }), await before.allocate({ app: 'kept' })];
    const { alloc, clock } = setup({ store }); // the new process
    expect(await alloc.allocate({ app: 'kept' })).toBe(kept);
    alloc.markInUse(kept);
    expect(await alloc.collectGarbage()).toEqual([]);
    clock.t += GRACE;
    expect(await alloc.collectGarbage()).toEqual([old]);
    expect([...store.byHash.values()]).toEqual([kept & 0xffff]);
  });

  it('keeps a binding the store refuses to release (still exported) and retries it on the next sweep', async () => {
    const { alloc, store, clock } = setup();
    const a = await alloc.allocate({ app: 'a' });
    alloc.markInUse(a);
    alloc.markUnused(a);
    store.exported.add(a & 0xffff); // the export key's delete has not reached etcd yet
    clock.t += GRACE;
    expect(await alloc.collectGarbage()).toEqual([]);
    expect(await alloc.allocate({ app: 'a' })).toBe(a);
    store.exported.clear();
    clock.t += GRACE;
    expect(await alloc.collectGarbage()).toEqual([a]);
  });

  it('makes an allocation racing a release wait for it and get a binding the store holds', async () => {
    const { alloc, store, clock } = setup();
    const a = await alloc.allocate({ app: 'a' });
    alloc.markUnused(a);
    clock.t += GRACE;
    let open!: () => void;
    store.releaseGate = new Promise((r) => (open = r));
    const sweep = alloc.collectGarbage();
    await new Promise((r) => setImmediate(r)); // the sweep is inside release() now
    expect(store.calls.release).toBe(1);
    const again = alloc.allocate({ app: 'a' });
    open();
    expect(await sweep).toEqual([a]);
    const id = await again;
    expect(store.byHash.get(labelsHash({ app: 'a' }))).toBe(id & 0xffff);
    expect(store.ids.get(id & 0xffff)).toBe(labelsHash({ app: 'a' }));
  });

  it('restores an in-use binding someone deleted behind its back', async () => {
    const { alloc, store } = setup();
    const a = await alloc.allocate({ app: 'a' });
    alloc.markInUse(a);
    store.byHash.clear();
    store.ids.clear();
    await alloc.collectGarbage();
    expect(store.byHash.get(labelsHash({ app: 'a' }))).toBe(a & 0xffff);
    expect(identityNumber(9, store.byHash.get(labelsHash({ app: 'a' }))!)).toBe(a);
  });
});
