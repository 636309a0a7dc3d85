import { afterEach, describe, expect, it, vi } from 'vitest';
import type { Namespace, Pod } from '../../mesh/kube/objects.js';
import { keys } from '../../mesh/schema/keys.js';
import { IdentityValue, IpEntry } from '../../mesh/schema/values.js';
import { StateWriter } from '../../mesh/state-writer.js';
import { createMetrics } from '../metrics.js';
import { identityNumber, labelsHash } from './identity.js';
import { PodIdentities } from './pod-identities.js';
import { MemoryIdentityStore, MemoryKv, recordingEventsApi } from './test-fakes.js';
import { WarningEvents } from './warning-events.js';

const CLUSTER = 'east';
const CLUSTER_ID = 4;
const GRACE = 30_000;
const TEAM: Namespace = { metadata: { name: 'team', labels: { 'kubernetes.io/metadata.name': 'team' } } };

const livePod = (name: string, ip: string, labels: Record<string, string>): Pod => ({
  metadata: { name, namespace: 'team', uid: `uid-${name}`, labels, resourceVersion: '1' },
  spec: { containers: [], serviceAccountName: 'default', nodeName: 'n1' },
  status: { phase: 'Running', podIP: ip },
});

function podIdentities(localIds?: { first: number; last: number }) {
  vi.useFakeTimers({ toFake: ['setTimeout', 'clearTimeout', 'Date'] });
  const kv = new MemoryKv();
  // As in etcd: the store refuses to release an identity whose export key is still there.
  const store = new MemoryIdentityStore((id) => kv.data.has(keys.identity(CLUSTER, identityNumber(CLUSTER_ID, id))));
  const { rest, events } = recordingEventsApi();
  const writer = new StateWriter(kv);
  writer.resume();
  const metrics = createMetrics();
  const log = { info: vi.fn(), warn: vi.fn() };
  const etcdErrors: unknown[] = [];
  const pods = new PodIdentities({
    cluster: CLUSTER,
    clusterId: CLUSTER_ID,
    writer,
    metrics,
    log,
    events: new WarningEvents(rest, CLUSTER, log),
    identities: store,
    gcGraceMs: GRACE,
    localIds,
    onEtcdError: (err) => etcdErrors.push(err),
  });
  const settle = async () => {
    await pods.settled();
    for (let i = 0; i < 5; i++) await new Promise((r) => setImmediate(r));
    await writer.idle();
  };
  const ipEntry = (ip: string) => {
    const raw = kv.data.get(keys.ip(CLUSTER, ip));
    return raw === undefined ? undefined : IpEntry.parse(JSON.parse(raw));
  };
  const identityKey = (id: number) => {
    const raw = kv.data.get(keys.identity(CLUSTER, id));
    return raw === undefined ? undefined : IdentityValue.parse(JSON.parse(raw));
  };
  const failures = async (reason: 'exhausted' | 'store') => (await metrics.identityAllocationFailures.get()).values.find((v) => v.labels.reason === reason)?.value ?? 0;
  const gauge = async (g: { get(): Promise<{ values: { value: number }[] }> }) => (await g.get()).values[0]?.value;
  return { pods, kv, store, events, metrics, log, etcdErrors, settle, ipEntry, identityKey, failures, gauge };
}

describe('pod identities', () => {
  afterEach(() => vi.useRealTimers());

  it('gives two pods of one label set one identity, exported while either runs and released a grace after the last', async () => {
    const t = podIdentities();
    t.pods.onNamespace('add', TEAM);
    // A second run of the same Job: only per-instance labels differ.
    t.pods.onPod('add', livePod('a1', '10.4.0.1', { app: 'a', 'job-name': 'a-1' }));
    t.pods.onPod('add', livePod('a2', '10.4.0.2', { app: 'a', 'job-name': 'a-2' }));
    await t.settle();
    const id = t.ipEntry('10.4.0.1')!.identity;
    expect(id).toBe(identityNumber(CLUSTER_ID, 256));
    expect(t.ipEntry('10.4.0.2')).toEqual({ ip: '10.4.0.2', identity: id, namespace: 'team', pod: 'a2', node: 'n1' });
    expect(t.identityKey(id)?.labels).toMatchObject({ 'k8s:app': 'a', 'k8s:io.kubernetes.pod.namespace': 'team' });
    expect({ identities: t.pods.identities, ips: t.pods.ips }).toEqual({ identities: 1, ips: 2 });
    expect(await t.gauge(t.metrics.exportedIdentities)).toBe(1);

    t.pods.onPod('delete', livePod('a1', '10.4.0.1', { app: 'a' }));
    await t.settle();
    expect(t.ipEntry('10.4.0.1')).toBeUndefined();
    expect(t.identityKey(id)).toBeDefined(); // a2 still uses it
    await vi.advanceTimersByTimeAsync(2 * GRACE);
    expect(await t.pods.collectIdentities()).toEqual([]);

    t.pods.onPod('delete', livePod('a2', '10.4.0.2', { app: 'a' }));
    await t.settle();
    expect(t.identityKey(id)).toBeUndefined();
    expect({ identities: t.pods.identities, ips: t.pods.ips }).toEqual({ identities: 0, ips: 0 });
    expect(t.store.byHash.size).toBe(1); // bound until the grace is over: a restarting workload keeps its ID
    expect(await t.pods.collectIdentities()).toEqual([]);
    await vi.advanceTimersByTimeAsync(GRACE);
    expect(await t.pods.collectIdentities()).toEqual([id]);
    expect(t.store.byHash.size).toBe(0);
    expect((await t.metrics.identitiesReleased.get()).values[0]?.value).toBe(1);
    expect(t.log.info).toHaveBeenCalledWith({ released: 1, identities: [id] }, 'released unused security identities');
  });

  it('moves a relabelled pod to its new identity, and exports nothing for pods that are not live', async () => {
    const t = podIdentities();
    t.pods.onNamespace('add', TEAM);
    t.pods.onPod('add', livePod('p', '10.4.0.1', { app: 'a' }));
    await t.settle();
    const before = t.ipEntry('10.4.0.1')!.identity;
    t.pods.onPod('update', livePod('p', '10.4.0.1', { app: 'b' }));
    await t.settle();
    const after = t.ipEntry('10.4.0.1')!.identity;
    expect(after).not.toBe(before);
    expect(t.identityKey(before)).toBeUndefined();
    expect(t.identityKey(after)?.labels['k8s:app']).toBe('b');

    const done = { ...livePod('p', '10.4.0.1', { app: 'b' }), status: { phase: 'Succeeded', podIP: '10.4.0.1' } };
    const host = { ...livePod('h', '10.0.0.5', { app: 'h' }), spec: { containers: [], hostNetwork: true } };
    const pending = { ...livePod('q', '', { app: 'q' }), status: { phase: 'Pending' } };
    for (const p of [done, host, pending]) t.pods.onPod('update', p);
    await t.settle();
    expect([...t.kv.data.keys()]).toEqual([]);
  });

  it('retries a pod whose allocation hit a mesh etcd error, and reports the error', async () => {
    const t = podIdentities();
    const lookup = t.store.lookup.bind(t.store);
    t.store.lookup = vi.fn().mockRejectedValueOnce(new Error('etcdserver: request timed out')).mockImplementation(lookup);
    t.pods.onNamespace('add', TEAM);
    t.pods.onPod('add', livePod('a', '10.4.0.1', { app: 'a' }));
    await t.settle();
    expect(t.ipEntry('10.4.0.1')).toBeUndefined();
    expect(await t.failures('store')).toBe(1);
    expect(t.etcdErrors).toEqual([expect.objectContaining({ message: 'etcdserver: request timed out' })]);
    expect(t.events).toEqual([]); // an etcd outage is no fault of the pod's owner
    await vi.advanceTimersByTimeAsync(1_500); // backoff: ~1 s
    await t.settle();
    expect(t.ipEntry('10.4.0.1')?.identity).toBe(identityNumber(CLUSTER_ID, 256));
  });

  it('leaves out the one pod without an ID, with a Warning Event, a metric and backoff, and exports it once an ID is released', async () => {
    const t = podIdentities({ first: 256, last: 257 });
    t.pods.onNamespace('add', TEAM);
    const [a, b, c] = [livePod('a', '10.4.0.1', { app: 'a' }), livePod('b', '10.4.0.2', { app: 'b' }), livePod('c', '10.4.0.3', { app: 'c' })];
    // Another run of a's Job: per-instance labels only, so it shares a's identity and needs no new ID.
    const a2 = livePod('a2', '10.4.0.4', { app: 'a', 'job-name': 'a-2', 'controller-uid': 'x2' });
    for (const p of [a, b, c, a2]) t.pods.onPod('add', p);
    await t.settle();
    expect(t.ipEntry('10.4.0.1')?.identity).toBeDefined();
    expect(t.ipEntry('10.4.0.2')?.identity).toBeDefined();
    expect(t.ipEntry('10.4.0.4')?.identity).toBe(t.ipEntry('10.4.0.1')?.identity);
    expect(t.ipEntry('10.4.0.3')).toBeUndefined();
    expect(t.events).toEqual([
      expect.objectContaining({
        path: '/api/v1/namespaces/team/events',
        involvedObject: expect.objectContaining({ kind: 'Pod', name: 'c' }),
        reason: 'SecurityIdentitySpaceExhausted',
        type: 'Warning',
        message: expect.stringContaining('no free security identity in cluster 4: all 2 local IDs are bound'),
      }),
    ]);
    expect(await t.failures('exhausted')).toBe(1);
    expect([await t.gauge(t.metrics.identityIdsBound), await t.gauge(t.metrics.identityIdsCapacity), await t.gauge(t.metrics.exportedIdentities)]).toEqual([2, 2, 2]);
    expect(t.log.warn).toHaveBeenCalledWith(expect.objectContaining({ pod: 'team/c', attempt: 1 }), expect.stringContaining('security identity allocation failed'));
    expect(t.etcdErrors).toEqual([]); // a full space is not an etcd error

    // Backoff, not a hot loop: retries after ~1, ~2 and ~4 s (±20%), so 4 attempts in the first 10 s; one Event.
    await vi.advanceTimersByTimeAsync(10_000);
    await t.settle();
    expect(await t.failures('exhausted')).toBe(4);
    expect(t.events).toHaveLength(1);

    // b goes away; its identity is released after the grace and c gets the freed ID without waiting for its backoff.
    const bIdentity = t.ipEntry('10.4.0.2')!.identity;
    t.pods.onPod('delete', b);
    await t.settle();
    expect(await t.pods.collectIdentities()).toEqual([]); // within the grace
    await vi.advanceTimersByTimeAsync(GRACE);
    expect(await t.pods.collectIdentities()).toEqual([bIdentity]);
    await t.settle();
    expect(t.ipEntry('10.4.0.3')?.identity).toBe(bIdentity);
    expect((await t.metrics.identitiesReleased.get()).values[0]?.value).toBe(1);
    const failuresAfter = await t.failures('exhausted');
    await vi.advanceTimersByTimeAsync(120_000);
    expect(await t.failures('exhausted')).toBe(failuresAfter); // exported: no more retries
    expect(t.store.byHash.get(labelsHash({ app: 'b' }))).toBeUndefined();
  });

  it('binds no throwaway identity for a pod seen before its namespace (informers list in parallel)', async () => {
    const t = podIdentities({ first: 256, last: 257 });
    t.pods.onPod('add', livePod('a', '10.4.0.1', { app: 'a' }));
    await t.settle();
    expect(t.ipEntry('10.4.0.1')).toBeUndefined();
    expect(t.store.byHash.size).toBe(0);
    t.pods.onNamespace('add', TEAM);
    await t.settle();
    expect(t.ipEntry('10.4.0.1')?.identity).toBe(identityNumber(CLUSTER_ID, 256));
    expect([...t.store.byHash.values()]).toEqual([256]);
  });
});
