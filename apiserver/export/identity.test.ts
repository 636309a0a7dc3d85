import { afterEach, describe, expect, it, vi } from 'vitest';
import type { KubeConfig, V1Namespace, V1Pod } from '@kubernetes/client-node';
import type { KubeRest } from '../../mesh/kube/rest.js';
import type { EtcdRef } from '../../mesh/etcd.js';
import { createMetrics } from '../metrics.js';
import { keys } from '../../mesh/schema/keys.js';
import { IpEntry } from '../../mesh/schema/values.js';
import { Exporter } from './exporter.js';
import { IdentityAllocator, IdentitySpaceExhaustedError, identityLabels, identityNumber, labelsHash, type ReleasableIdentityStore } from './identity.js';
import { StateWriter, type KvBackend, type KvOp } from '../../mesh/state-writer.js';

/** The mesh etcd's identity bookkeeping in memory; `exported` plays the export keys that mark use. */
class MemoryIdentityStore implements ReleasableIdentityStore {
  byHash = new Map<string, number>();
  ids = new Map<number, string>();
  exported = new Set<number>();
  constructor(private readonly isExported: (localId: number) => boolean = (id) => this.exported.has(id)) {}
  calls = { lookup: 0, tryBind: 0, release: 0 };
  /** Set to hold release() until the test lets it finish. */
  releaseGate?: Promise<void>;
  async lookup(hash: string) {
    this.calls.lookup++;
    return this.byHash.get(hash);
  }
  async tryBind(hash: string, id: number) {
    this.calls.tryBind++;
    if (this.byHash.has(hash) || this.ids.has(id)) return false;
    this.byHash.set(hash, id);
    this.ids.set(id, hash);
    return true;
  }
  async boundIds() {
    return new Set(this.ids.keys());
  }
  async bindings() {
    return new Map(this.byHash);
  }
  async release(hash: string, id: number) {
    this.calls.release++;
    await this.releaseGate;
    if (this.byHash.get(hash) !== id || this.ids.get(id) !== hash || this.isExported(id)) return false;
    this.byHash.delete(hash);
    this.ids.delete(id);
    return true;
  }
}

const pod = (labels: Record<string, string>, ns = 'default'): V1Pod => ({ metadata: { namespace: ns, labels }, spec: { containers: [], serviceAccountName: 'sa' } });

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

class MemoryKv implements KvBackend {
  data = new Map<string, string>();
  async list(prefix: string) {
    return new Map([...this.data].filter(([k]) => k.startsWith(prefix)));
  }
  async apply(ops: KvOp[]) {
    for (const op of ops) op.value === null ? this.data.delete(op.key) : this.data.set(op.key, op.value);
  }
}

describe('the exporter with a full identity space', () => {
  afterEach(() => vi.useRealTimers());

  const CLUSTER = 'east';
  const CLUSTER_ID = 4;
  const livePod = (name: string, ip: string, labels: Record<string, string>): V1Pod => ({
    metadata: { name, namespace: 'team', uid: `uid-${name}`, labels, resourceVersion: '1' },
    spec: { containers: [], serviceAccountName: 'default', nodeName: 'n1' },
    status: { phase: 'Running', podIP: ip },
  });

  const TEAM: V1Namespace = { metadata: { name: 'team', labels: { 'kubernetes.io/metadata.name': 'team' } } };

  function exporterOnTinySpace() {
    vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
    const kv = new MemoryKv();
    const store = new MemoryIdentityStore((id) => kv.data.has(keys.identity(CLUSTER, identityNumber(CLUSTER_ID, id))));
    const events: { involvedObject: { kind: string; name: string }; reason: string; type: string; message: string }[] = [];
    const rest = { post: async (_path: string, body: (typeof events)[number]) => void events.push(body) } as unknown as KubeRest;
    const writer = new StateWriter(kv);
    writer.resume();
    const metrics = createMetrics();
    const log = { info: () => {}, warn: vi.fn() };
    const exporter = new Exporter({
      cluster: CLUSTER,
      clusterId: CLUSTER_ID,
      kc: {} as KubeConfig,
      rest,
      etcd: (() => undefined) as unknown as EtcdRef,
      writer,
      identities: store,
      identityGcGraceMs: 30_000,
      identityLocalIds: { first: 256, last: 257 },
      metrics,
      log,
    });
    const handlers = exporter as unknown as { onPod(t: string, p: V1Pod): void; onNamespace(t: string, ns: V1Namespace): void };
    const onPod = (type: 'add' | 'delete', pod: V1Pod) => handlers.onPod(type, pod);
    const onNamespace = (ns: V1Namespace) => handlers.onNamespace('add', ns);
    const settle = async () => {
      for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
      await writer.idle();
    };
    const ipEntry = (ip: string) => {
      const raw = kv.data.get(keys.ip(CLUSTER, ip));
      return raw === undefined ? undefined : IpEntry.parse(JSON.parse(raw));
    };
    const failures = async () => (await metrics.identityAllocationFailures.get()).values.find((v) => v.labels.reason === 'exhausted')?.value ?? 0;
    const gauge = async (g: { get(): Promise<{ values: { value: number }[] }> }) => (await g.get()).values[0]?.value;
    return { exporter, onPod, onNamespace, settle, ipEntry, failures, gauge, events, metrics, store, log };
  }

  it('leaves out the one pod without an ID, with a Warning Event, a metric and backoff, and exports it once an ID is released', async () => {
    const t = exporterOnTinySpace();
    t.onNamespace(TEAM);
    const [a, b, c] = [livePod('a', '10.4.0.1', { app: 'a' }), livePod('b', '10.4.0.2', { app: 'b' }), livePod('c', '10.4.0.3', { app: 'c' })];
    // Another run of a's Job: per-instance labels only, so it shares a's identity and needs no new ID.
    const a2 = livePod('a2', '10.4.0.4', { app: 'a', 'job-name': 'a-2', 'controller-uid': 'x2' });
    for (const p of [a, b, c, a2]) t.onPod('add', p);
    await t.settle();
    expect(t.ipEntry('10.4.0.1')?.identity).toBeDefined();
    expect(t.ipEntry('10.4.0.2')?.identity).toBeDefined();
    expect(t.ipEntry('10.4.0.4')?.identity).toBe(t.ipEntry('10.4.0.1')?.identity);
    expect(t.ipEntry('10.4.0.3')).toBeUndefined();
    expect(t.events).toEqual([
      expect.objectContaining({ involvedObject: expect.objectContaining({ kind: 'Pod', name: 'c' }), reason: 'SecurityIdentitySpaceExhausted', type: 'Warning', message: expect.stringContaining('no free security identity in cluster 4: all 2 local IDs are bound') }),
    ]);
    expect(await t.failures()).toBe(1);
    expect([await t.gauge(t.metrics.identityIdsBound), await t.gauge(t.metrics.identityIdsCapacity), await t.gauge(t.metrics.exportedIdentities)]).toEqual([2, 2, 2]);
    expect(t.log.warn).toHaveBeenCalledWith(expect.objectContaining({ pod: 'team/c', attempt: 1 }), expect.stringContaining('security identity allocation failed'));

    // Backoff, not a hot loop: retries after ~1, ~2 and ~4 s (±20%), so 4 attempts in the first 10 s; one Event.
    await vi.advanceTimersByTimeAsync(10_000);
    await t.settle();
    expect(await t.failures()).toBe(4);
    expect(t.events).toHaveLength(1);

    // b goes away; its identity is released after the grace and c gets the freed ID without waiting for its backoff.
    const bIdentity = t.ipEntry('10.4.0.2')!.identity;
    t.onPod('delete', b);
    await t.settle();
    expect(await t.exporter.collectIdentities()).toEqual([]); // within the grace
    await vi.advanceTimersByTimeAsync(30_000);
    expect(await t.exporter.collectIdentities()).toEqual([bIdentity]);
    await t.settle();
    expect(t.ipEntry('10.4.0.3')?.identity).toBe(bIdentity);
    expect((await t.metrics.identitiesReleased.get()).values[0]?.value).toBe(1);
    const failuresAfter = await t.failures();
    await vi.advanceTimersByTimeAsync(120_000);
    expect(await t.failures()).toBe(failuresAfter); // exported: no more retries
    expect(t.store.byHash.get(labelsHash({ app: 'b' }))).toBeUndefined();
  });

  it('binds no throwaway identity for a pod seen before its namespace (informers list in parallel)', async () => {
    const t = exporterOnTinySpace();
    t.onPod('add', livePod('a', '10.4.0.1', { app: 'a' }));
    await t.settle();
    expect(t.ipEntry('10.4.0.1')).toBeUndefined();
    expect(t.store.byHash.size).toBe(0);
    t.onNamespace(TEAM);
    await t.settle();
    expect(t.ipEntry('10.4.0.1')?.identity).toBe(identityNumber(CLUSTER_ID, 256));
    expect([...t.store.byHash.values()]).toEqual([256]);
  });
});
