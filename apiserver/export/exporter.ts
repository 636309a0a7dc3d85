// The export: Kubernetes objects in, mesh etcd keys out. Each event recomputes only the keys it affects;
// the StateWriter turns that into minimal etcd writes. After every informer's first list the exporter prunes
// keys Kubernetes no longer has (a restart reconciles, never duplicates) and marks each kind synced.
import { isIPv4 } from 'node:net';
import type { KubeConfig, KubernetesObject, V1EndpointSlice, V1Namespace, V1Node, V1Pod, V1Service } from '@kubernetes/client-node';
import type { Lease } from 'etcd3';
import type { EtcdRef } from '../../mesh/etcd.js';
import { startInformer, type RunningInformer } from '../../mesh/kube/informer.js';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { EXPORT_KINDS, exportPrefix, keys, type ExportKind } from '../../mesh/schema/keys.js';
import { ClusterConfig, encodeValue, GlobalService, Heartbeat, IdentityValue, IpEntry, MeshNode, SyncedMarker } from '../../mesh/schema/values.js';
import type { Metrics } from '../metrics.js';
import { retryUntilDone } from '../../mesh/backoff.js';
import { parseGlobalAnnotations, type GlobalSpec } from '../../mesh/schema/annotations.js';
import { DEFAULT_IDENTITY_GC_GRACE_MS, IdentityAllocator, IdentitySpaceExhaustedError, identityLabels, type ReleasableIdentityStore } from './identity.js';
import { globalServiceValue } from './service-model.js';
import type { ExportStatus } from '../../mesh/status.js';
import { StateWriter } from '../../mesh/state-writer.js';

export interface ExporterOptions {
  cluster: string;
  clusterId: number;
  kc: KubeConfig;
  rest: KubeRest;
  etcd: EtcdRef;
  writer: StateWriter;
  identities: ReleasableIdentityStore;
  /** An identity unused this long is released (its ID handed out again); default 10 min. */
  identityGcGraceMs?: number;
  /** The local identity ID range, inclusive (tests shrink it to fill it). */
  identityLocalIds?: { first: number; last: number };
  metrics: Metrics;
  log: { info: (obj: object, msg: string) => void; warn: (obj: object, msg: string) => void };
  heartbeatMs?: number;
  leaseTtlSeconds?: number;
}

const nodePodCidrs = (n: V1Node): string[] => n.spec?.podCIDRs ?? (n.spec?.podCIDR ? [n.spec.podCIDR] : []);
const nsName = (o: KubernetesObject) => `${o.metadata?.namespace}/${o.metadata?.name}`;
/**
 * Backoff of a pod whose identity allocation failed: 1 s doubling, up to 5 s for a mesh etcd error (back
 * soon after etcd is) and 1 min for a full ID space (only a release frees one, and that retries at once).
 */
const IDENTITY_RETRY_BASE_MS = 1_000;
const IDENTITY_RETRY_MAX_MS = { store: 5_000, exhausted: 60_000 };

export class Exporter {
  private readonly services = new Map<string, V1Service>();
  private readonly slices = new Map<string, Map<string, V1EndpointSlice>>();
  private readonly pods = new Map<string, V1Pod>();
  private readonly namespaces = new Map<string, V1Namespace>();
  private readonly nodes = new Map<string, V1Node>();
  private readonly exported = new Map<string, GlobalService>();
  /** Per pod: the IP and identity it contributes, so removal releases exactly those. */
  private readonly podExport = new Map<string, { ip: string; identity: number }>();
  private readonly ipOwner = new Map<string, string>();
  private readonly identityRefs = new Map<number, { labels: Record<string, string>; refs: number }>();
  private readonly podGeneration = new Map<string, number>();
  private readonly pendingPods = new Set<Promise<void>>();
  private readonly reportedAnnotations = new Set<string>();
  private readonly allocator: IdentityAllocator;
  /** Pods whose identity allocation failed: attempts so far (for the backoff), and whether the Event is out. */
  private readonly identityRetries = new Map<string, { attempts: number; reported: boolean }>();
  private identityGcTimer?: NodeJS.Timeout;
  private informers: RunningInformer<KubernetesObject>[] = [];
  private lease?: Lease;
  private heartbeatTimer?: NodeJS.Timeout;
  private synced = false;
  private stopped = false;
  private lastEtcdError?: string;
  private initialSyncMs?: number;

  constructor(private readonly o: ExporterOptions) {
    this.allocator = new IdentityAllocator(o.clusterId, o.identities, {
      gcGraceMs: o.identityGcGraceMs,
      firstLocalId: o.identityLocalIds?.first,
      lastLocalId: o.identityLocalIds?.last,
    });
    o.metrics.identityIdsCapacity.set(this.allocator.capacity);
  }

  get isSynced(): boolean {
    return this.synced;
  }

  async start(): Promise<void> {
    const { writer } = this.o;
    await retryUntilDone('loading the export from the mesh etcd', () => writer.load([exportPrefix(this.o.cluster), keys.localServicesPrefix(this.o.cluster)]), this.o.log, (err) => {
      this.noteEtcdError(err);
      this.o.metrics.etcdErrors.inc();
    });
    const watch = <T extends KubernetesObject>(resource: string, path: string, onEvent: (type: 'add' | 'update' | 'delete', obj: T) => void) =>
      startInformer<T>({
        kc: this.o.kc,
        path,
        list: () => this.o.rest.get(path),
        onEvent,
        onRestart: (err, attempt) => {
          this.o.metrics.watchRestarts.inc({ resource });
          this.o.log.warn({ resource, attempt, err: (err as Error)?.message }, 'kubernetes watch restarting');
        },
      }) as unknown as RunningInformer<KubernetesObject>;
    this.informers = [
      watch<V1Namespace>('namespaces', '/api/v1/namespaces', (t, ns) => this.onNamespace(t, ns)),
      watch<V1Node>('nodes', '/api/v1/nodes', (t, n) => this.onNode(t, n)),
      watch<V1Service>('services', '/api/v1/services', (t, s) => this.onService(t, s)),
      watch<V1EndpointSlice>('endpointslices', '/apis/discovery.k8s.io/v1/endpointslices', (t, s) => this.onSlice(t, s)),
      watch<V1Pod>('pods', '/api/v1/pods', (t, p) => this.onPod(t, p)),
    ];
    await Promise.all(this.informers.map((i) => i.synced));
    while (this.pendingPods.size > 0) await Promise.all([...this.pendingPods]);
    this.writeConfig();
    // Everything Kubernetes has is now desired; whatever else the prefix holds is stale from an earlier run.
    let pruned = 0;
    for (const kind of EXPORT_KINDS) pruned += writer.pruneUnder(keys.kindPrefix(this.o.cluster, kind));
    pruned += writer.pruneUnder(keys.localServicesPrefix(this.o.cluster));
    writer.resume();
    await writer.idle();
    await this.startLease();
    this.synced = true;
    this.scheduleIdentityGc();
    this.initialSyncMs = Math.round(performance.now());
    this.o.log.info({ services: this.exported.size, pruned, writes: writer.writes }, 'initial export synced');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    if (this.identityGcTimer) clearTimeout(this.identityGcTimer);
    await Promise.all(this.informers.map((i) => i.stop()));
    await this.o.writer.idle();
    // Revoking the lease removes the heartbeat and synced markers at once: peers see us gone, not stale.
    await this.lease?.revoke().catch(() => {});
  }

  // ---- heartbeat and synced markers, on one lease so they vanish with this process ----

  private async startLease(): Promise<void> {
    const ttl = this.o.leaseTtlSeconds ?? 15;
    const grant = async () => {
      const lease = this.o.etcd().lease(ttl, { autoKeepAlive: true });
      lease.on('lost', (err) => {
        if (this.stopped) return;
        this.o.log.warn({ err: err?.message }, 'mesh etcd lease lost, granting a new one');
        this.lastEtcdError = err?.message;
        setTimeout(() => void grant().catch(() => {}), 500);
      });
      this.lease = lease;
      await this.writeMarkers(lease);
    };
    await grant();
    this.heartbeatTimer = setInterval(() => {
      if (!this.lease) return;
      this.lease
        .put(keys.heartbeat(this.o.cluster))
        .value(encodeValue(Heartbeat, { cluster: this.o.cluster, at: new Date().toISOString() }))
        .exec()
        .then(() => (this.lastEtcdError = undefined))
        .catch((err: Error) => {
          this.lastEtcdError = err.message;
          this.o.metrics.etcdErrors.inc();
        });
    }, this.o.heartbeatMs ?? 5_000);
    this.heartbeatTimer.unref();
  }

  /** After the etcd client was replaced (identity renewal): heartbeat and markers move to a new lease. */
  async moveLease(): Promise<void> {
    if (!this.synced || this.stopped) return;
    const old = this.lease;
    const lease = this.o.etcd().lease(this.o.leaseTtlSeconds ?? 15, { autoKeepAlive: true });
    lease.on('lost', () => void (!this.stopped && this.lease === lease && this.moveLease().catch(() => {})));
    await this.writeMarkers(lease);
    this.lease = lease;
    old?.removeAllListeners('lost');
    await old?.revoke().catch(() => {});
  }

  private async writeMarkers(lease: Lease): Promise<void> {
    const at = new Date().toISOString();
    await lease.put(keys.heartbeat(this.o.cluster)).value(encodeValue(Heartbeat, { cluster: this.o.cluster, at }));
    const counts: Record<ExportKind, number> = { services: this.exported.size, identities: this.identityRefs.size, ips: this.ipOwner.size, nodes: this.nodes.size };
    for (const kind of EXPORT_KINDS) await lease.put(keys.synced(this.o.cluster, kind)).value(encodeValue(SyncedMarker, { at, count: counts[kind] }));
  }

  // ---- services and endpoint slices ----

  private onService(type: string, svc: V1Service): void {
    const id = nsName(svc);
    if (type === 'delete') this.services.delete(id);
    else this.services.set(id, svc);
    this.recomputeService(id);
  }

  private onSlice(type: string, slice: V1EndpointSlice): void {
    const svcName = slice.metadata?.labels?.['kubernetes.io/service-name'];
    if (!svcName) return;
    const id = `${slice.metadata?.namespace}/${svcName}`;
    let bySlice = this.slices.get(id);
    if (type === 'delete') bySlice?.delete(slice.metadata!.name!);
    else {
      if (!bySlice) this.slices.set(id, (bySlice = new Map()));
      bySlice.set(slice.metadata!.name!, slice);
    }
    if (bySlice?.size === 0) this.slices.delete(id);
    this.recomputeService(id);
  }

  private recomputeService(id: string): void {
    const [namespace, name] = id.split('/') as [string, string];
    const key = keys.service(this.o.cluster, namespace, name);
    const localKey = keys.localService(this.o.cluster, namespace, name);
    const svc = this.services.get(id);
    const parsed = svc ? parseGlobalAnnotations(svc.metadata?.annotations) : undefined;
    if (svc && parsed && !parsed.ok) this.reportBadAnnotation(svc, parsed.annotation, parsed.error);
    const global = Boolean(parsed?.ok && parsed.spec.global);
    if (!svc || !global || svc.spec?.type === 'ExternalName') {
      if (this.exported.delete(id)) this.updateServiceGauges();
      this.o.writer.set(key, null);
    }
    if (!svc || svc.spec?.type === 'ExternalName') {
      this.o.writer.set(localKey, null);
      return;
    }
    const slices = this.slices.get(id)?.values() ?? [];
    if (!global) {
      // Not exported, but this cluster's agents still serve its ClusterIP with its local backends (a service
      // with a bad annotation too: Kubernetes serves it whatever Skein thinks of the annotation).
      const value = globalServiceValue(this.o.cluster, svc, { global: false, shared: false, affinity: 'none' }, slices);
      this.o.writer.set(localKey, value.clusterIps.length ? encodeValue(GlobalService, value) : null);
      return;
    }
    const value = globalServiceValue(this.o.cluster, svc, (parsed as { spec: GlobalSpec }).spec, slices);
    this.exported.set(id, value);
    this.o.writer.set(localKey, null);
    this.o.writer.set(key, encodeValue(GlobalService, value));
    this.updateServiceGauges();
  }

  private updateServiceGauges(): void {
    let ready = 0;
    let notReady = 0;
    for (const s of this.exported.values()) for (const b of s.backends) b.ready ? ready++ : notReady++;
    this.o.metrics.exportedServices.set(this.exported.size);
    this.o.metrics.exportedBackends.set({ ready: 'true' }, ready);
    this.o.metrics.exportedBackends.set({ ready: 'false' }, notReady);
  }

  /** A Warning Event on the Service, once per bad value, and a log line naming annotation and fix. */
  private reportBadAnnotation(svc: V1Service, annotation: string, error: string): void {
    const dedupe = `${svc.metadata?.uid}/${annotation}/${svc.metadata?.annotations?.[annotation]}`;
    if (this.reportedAnnotations.has(dedupe)) return;
    this.reportedAnnotations.add(dedupe);
    this.o.metrics.invalidAnnotations.inc();
    this.o.log.warn({ service: nsName(svc), annotation }, `service not exported: ${error}`);
    this.warningEvent('Service', svc, 'InvalidSkeinAnnotation', `not exported to the mesh: ${error}`);
  }

  /** A Warning Event on a Service or Pod (what `kubectl describe` shows its owner); a failure is only logged. */
  private warningEvent(kind: 'Service' | 'Pod', obj: KubernetesObject, reason: string, message: string): void {
    const now = new Date().toISOString();
    const ns = obj.metadata!.namespace!;
    void this.o.rest
      .post(`/api/v1/namespaces/${ns}/events`, {
        metadata: { generateName: `${obj.metadata!.name}.skein-`, namespace: ns },
        involvedObject: { kind, apiVersion: 'v1', namespace: ns, name: obj.metadata!.name, uid: obj.metadata!.uid, resourceVersion: obj.metadata!.resourceVersion },
        reason,
        message,
        type: 'Warning',
        source: { component: 'skein-apiserver' },
        reportingComponent: 'skein-apiserver',
        reportingInstance: this.o.cluster,
        firstTimestamp: now,
        lastTimestamp: now,
        count: 1,
      })
      .catch((err: Error) => this.o.log.warn({ err: err.message, reason }, 'could not record the Event'));
  }

  // ---- pods: IP → identity entries and the identities themselves ----

  private onNamespace(type: string, ns: V1Namespace): void {
    const name = ns.metadata!.name!;
    if (type === 'delete') this.namespaces.delete(name);
    else this.namespaces.set(name, ns);
    for (const pod of this.pods.values()) if (pod.metadata?.namespace === name) this.recomputePod(pod.metadata!.uid!);
  }

  private onPod(type: string, pod: V1Pod): void {
    const uid = pod.metadata!.uid!;
    if (type === 'delete') this.pods.delete(uid);
    else this.pods.set(uid, pod);
    this.recomputePod(uid);
  }

  private recomputePod(uid: string): void {
    const gen = (this.podGeneration.get(uid) ?? 0) + 1;
    this.podGeneration.set(uid, gen);
    const pod = this.pods.get(uid);
    const ip = pod?.status?.podIP;
    // The identity includes the namespace's labels: a pod seen before its namespace (informers list in
    // parallel) would bind a throwaway identity; onNamespace recomputes it once the namespace is known.
    const namespace = pod && this.namespaces.get(pod.metadata!.namespace!);
    const live = pod && namespace && ip && !pod.spec?.hostNetwork && pod.status?.phase !== 'Succeeded' && pod.status?.phase !== 'Failed';
    if (!live) {
      this.releasePod(uid);
      this.identityRetries.delete(uid);
      if (!pod) this.podGeneration.delete(uid);
      return;
    }
    const labels = identityLabels(this.o.cluster, pod, namespace);
    const work = this.allocator
      .allocate(labels)
      .then((identity) => {
        if (this.podGeneration.get(uid) !== gen) return; // a newer event for this pod superseded us
        this.identityRetries.delete(uid);
        const prev = this.podExport.get(uid);
        if (prev?.ip === ip && prev.identity === identity) return;
        this.releasePod(uid);
        this.podExport.set(uid, { ip, identity });
        this.ipOwner.set(ip, uid);
        this.o.writer.set(keys.ip(this.o.cluster, ip), encodeValue(IpEntry, { ip, identity, namespace: pod.metadata!.namespace!, pod: pod.metadata!.name!, node: pod.spec?.nodeName }));
        const ref = this.identityRefs.get(identity);
        if (ref) ref.refs++;
        else {
          this.identityRefs.set(identity, { labels, refs: 1 });
          this.allocator.markInUse(identity);
          this.o.writer.set(keys.identity(this.o.cluster, identity), encodeValue(IdentityValue, { id: identity, labels }));
        }
        this.updateIdentityGauges();
      })
      .catch((err: Error) => this.identityAllocationFailed(pod, gen, err));
    this.pendingPods.add(work);
    void work.finally(() => this.pendingPods.delete(work));
  }

  private releasePod(uid: string): void {
    const prev = this.podExport.get(uid);
    if (!prev) return;
    this.podExport.delete(uid);
    if (this.ipOwner.get(prev.ip) === uid) {
      this.ipOwner.delete(prev.ip);
      this.o.writer.set(keys.ip(this.o.cluster, prev.ip), null);
    }
    const ref = this.identityRefs.get(prev.identity);
    if (ref && --ref.refs === 0) {
      this.identityRefs.delete(prev.identity);
      this.allocator.markUnused(prev.identity);
      this.o.writer.set(keys.identity(this.o.cluster, prev.identity), null);
    }
    this.updateIdentityGauges();
  }

  /**
   * The pod stays unexported (every other pod and service goes on) and is retried with capped exponential
   * backoff. A full ID space also gets a Warning Event on the pod, once per failure streak.
   */
  private identityAllocationFailed(pod: V1Pod, gen: number, err: Error): void {
    const uid = pod.metadata!.uid!;
    if (this.podGeneration.get(uid) !== gen) return;
    const retry = this.identityRetries.get(uid) ?? { attempts: 0, reported: false };
    retry.attempts++;
    this.identityRetries.set(uid, retry);
    const exhausted = err instanceof IdentitySpaceExhaustedError;
    this.o.metrics.identityAllocationFailures.inc({ reason: exhausted ? 'exhausted' : 'store' });
    this.updateIdentityGauges();
    if (!exhausted) {
      this.lastEtcdError = err.message;
      this.o.metrics.etcdErrors.inc();
    }
    const cap = IDENTITY_RETRY_MAX_MS[exhausted ? 'exhausted' : 'store'];
    const retryInMs = Math.round(Math.min(IDENTITY_RETRY_BASE_MS * 2 ** Math.min(retry.attempts - 1, 16), cap) * (0.8 + 0.4 * Math.random()));
    this.o.log.warn({ pod: nsName(pod), attempt: retry.attempts, retryInMs, err: err.message }, 'security identity allocation failed, pod not exported; retrying');
    if (exhausted && !retry.reported) {
      retry.reported = true;
      this.warningEvent('Pod', pod, 'SecurityIdentitySpaceExhausted', `not exported to the mesh: ${err.message}`);
    }
    setTimeout(() => this.podGeneration.get(uid) === gen && this.recomputePod(uid), retryInMs).unref();
  }

  private updateIdentityGauges(): void {
    this.o.metrics.exportedIdentities.set(this.identityRefs.size);
    this.o.metrics.identityIdsBound.set(this.allocator.bound);
  }

  /** Identity GC, every half grace (1 s to 1 min), from the initial sync on. */
  private scheduleIdentityGc(): void {
    const grace = this.o.identityGcGraceMs ?? DEFAULT_IDENTITY_GC_GRACE_MS;
    const every = Math.min(Math.max(grace / 2, 1_000), 60_000);
    this.identityGcTimer = setTimeout(() => {
      void this.collectIdentities().finally(() => !this.stopped && this.scheduleIdentityGc());
    }, every);
    this.identityGcTimer.unref();
  }

  /** One GC pass: releases identities unused for the grace, then retries pods that waited for a free ID. */
  async collectIdentities(): Promise<number[]> {
    try {
      const released = await this.allocator.collectGarbage();
      if (released.length > 0) {
        this.o.metrics.identitiesReleased.inc(released.length);
        this.o.log.info({ released: released.length, identities: released.slice(0, 20) }, 'released unused security identities');
        for (const uid of [...this.identityRetries.keys()]) this.recomputePod(uid);
      }
      return released;
    } catch (err) {
      this.noteEtcdError(err);
      this.o.metrics.etcdErrors.inc();
      this.o.log.warn({ err: (err as Error).message }, 'security identity garbage collection failed; retrying on the next pass');
      return [];
    } finally {
      this.updateIdentityGauges();
    }
  }

  // ---- nodes and the cluster config (pod CIDRs come from the nodes) ----

  private onNode(type: string, node: V1Node): void {
    const name = node.metadata!.name!;
    if (type === 'delete') {
      this.nodes.delete(name);
      this.o.writer.set(keys.node(this.o.cluster, name), null);
    } else {
      this.nodes.set(name, node);
      const value = {
        name,
        cluster: this.o.cluster,
        addresses: (node.status?.addresses ?? []).filter((a) => isIPv4(a.address)).map((a) => ({ type: a.type, ip: a.address })),
        podCidrs: nodePodCidrs(node),
        zone: node.metadata?.labels?.['topology.kubernetes.io/zone'],
      };
      this.o.writer.set(keys.node(this.o.cluster, name), encodeValue(MeshNode, value));
    }
    this.o.metrics.exportedNodes.set(this.nodes.size);
    this.writeConfig();
  }

  private podCidrs(): string[] {
    return [...new Set([...this.nodes.values()].flatMap(nodePodCidrs))].sort();
  }

  private writeConfig(): void {
    this.o.writer.set(keys.config(this.o.cluster), encodeValue(ClusterConfig, { name: this.o.cluster, id: this.o.clusterId, podCidrs: this.podCidrs(), schema: 'v1' }));
  }

  status(): ExportStatus {
    return {
      cluster: this.o.cluster,
      clusterId: this.o.clusterId,
      synced: this.synced,
      podCidrs: this.podCidrs(),
      services: [...this.exported.entries()]
        .sort(([a], [b]) => a.localeCompare(b))
        .map(([name, s]) => ({ name, shared: s.shared, affinity: s.affinity, backends: s.backends.length, readyBackends: s.backends.filter((b) => b.ready).length })),
      identities: this.identityRefs.size,
      ips: this.ipOwner.size,
      nodes: this.nodes.size,
      etcd: { backlog: this.o.writer.backlog, writes: this.o.writer.writes, lastError: this.lastEtcdError },
      watchRestarts: this.informers.reduce((n, i) => n + i.restarts, 0),
      initialSyncMs: this.initialSyncMs,
      rssBytes: process.memoryUsage.rss(),
    };
  }

  noteEtcdError(err: unknown): void {
    this.lastEtcdError = (err as Error)?.message ?? String(err);
  }
}
