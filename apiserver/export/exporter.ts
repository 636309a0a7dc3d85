// The export: Kubernetes objects in, mesh etcd keys out. This file composes the units with the informers:
// services (service-export.ts), pods and their identities (pod-identities.ts), nodes and the cluster config
// (node-export.ts), and the heartbeat and synced markers (presence.ts). Each event recomputes only the keys
// it affects; the StateWriter turns that into minimal etcd writes. After every informer's first list the
// exporter prunes keys Kubernetes no longer has (a restart reconciles, never duplicates) and marks each
// kind synced.
import type { KubeConfig } from '@kubernetes/client-node';
import { retryUntilDone } from '../../mesh/backoff.js';
import type { EtcdRef } from '../../mesh/etcd.js';
import { startInformer, type RunningInformer } from '../../mesh/kube/informer.js';
import type { KubeRest } from '../../mesh/kube/rest.js';
import { EXPORT_KINDS, exportPrefix, keys } from '../../mesh/schema/keys.js';
import type { StateWriter } from '../../mesh/state-writer.js';
import type { ExportStatus } from '../../mesh/status.js';
import type { Metrics } from '../metrics.js';
import type { ExportLog } from './context.js';
import { EtcdHealth } from './etcd-health.js';
import type { ReleasableIdentityStore } from './identity.js';
import { NodeExport } from './node-export.js';
import { PodIdentities } from './pod-identities.js';
import { ExportPresence } from './presence.js';
import { ServiceExport } from './service-export.js';
import { WarningEvents } from './warning-events.js';
import type { EndpointSlice, KubeNode, KubeObject, Namespace, Pod, Service } from '../../mesh/kube/objects.js';

export interface ExporterOptions {
  cluster: string;
  clusterId: number;
  /** The cluster's whole pod CIDR(s) (--cluster-pod-cidr): what peers pin; default: the nodes' pod CIDRs. */
  clusterPodCidrs?: string[];
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
  log: ExportLog;
  heartbeatMs?: number;
  leaseTtlSeconds?: number;
}

export class Exporter {
  private readonly etcdHealth: EtcdHealth;
  private readonly services: ServiceExport;
  private readonly pods: PodIdentities;
  private readonly nodes: NodeExport;
  private readonly presence: ExportPresence;
  private informers: RunningInformer<KubeObject>[] = [];
  private synced = false;
  private stopped = false;
  private initialSyncMs?: number;

  constructor(private readonly o: ExporterOptions) {
    const { cluster, clusterId, writer, metrics, log } = o;
    const health = (this.etcdHealth = new EtcdHealth(metrics.etcdErrors));
    const events = new WarningEvents(o.rest, cluster, log);
    this.services = new ServiceExport({ cluster, writer, metrics, log, events, lastExported: async (key) => (await o.etcd().get(key).string()) ?? undefined });
    this.pods = new PodIdentities({
      cluster,
      clusterId,
      writer,
      metrics,
      log,
      events,
      identities: o.identities,
      gcGraceMs: o.identityGcGraceMs,
      localIds: o.identityLocalIds,
      onEtcdError: (err) => health.failed(err),
    });
    this.nodes = new NodeExport({ cluster, clusterId, clusterPodCidrs: o.clusterPodCidrs, writer, metrics, log });
    this.presence = new ExportPresence({
      cluster,
      etcd: o.etcd,
      health,
      log,
      heartbeatMs: o.heartbeatMs,
      leaseTtlSeconds: o.leaseTtlSeconds,
      counts: () => ({ services: this.services.count, identities: this.pods.identities, ips: this.pods.ips, nodes: this.nodes.count }),
    });
  }

  get isSynced(): boolean {
    return this.synced;
  }

  async start(): Promise<void> {
    const { writer } = this.o;
    await retryUntilDone('loading the export from the mesh etcd', () => writer.load([exportPrefix(this.o.cluster), keys.localServicesPrefix(this.o.cluster)]), this.o.log, {
      onError: (err) => this.etcdHealth.failed(err),
    });
    this.informers = [
      this.watch<Namespace>('namespaces', '/api/v1/namespaces', (t, ns) => this.pods.onNamespace(t, ns)),
      this.watch<KubeNode>('nodes', '/api/v1/nodes', (t, n) => this.nodes.onNode(t, n)),
      this.watch<Service>('services', '/api/v1/services', (t, s) => this.services.onService(t, s)),
      this.watch<EndpointSlice>('endpointslices', '/apis/discovery.k8s.io/v1/endpointslices', (t, s) => this.services.onSlice(t, s)),
      this.watch<Pod>('pods', '/api/v1/pods', (t, p) => {
        this.pods.onPod(t, p);
        this.services.onPod(t, p);
      }),
    ];
    await Promise.all(this.informers.map((i) => i.synced));
    await this.pods.settled();
    // Last good exports of services whose annotation turned bad while this process was down: kept, not pruned.
    await this.services.settled();
    this.nodes.writeConfig();
    // Everything Kubernetes has is now desired; whatever else the prefix holds is stale from an earlier run.
    let pruned = 0;
    for (const kind of EXPORT_KINDS) pruned += writer.pruneUnder(keys.kindPrefix(this.o.cluster, kind));
    pruned += writer.pruneUnder(keys.localServicesPrefix(this.o.cluster));
    writer.resume();
    await writer.idle();
    await this.presence.start();
    this.synced = true;
    this.pods.startGc();
    this.initialSyncMs = Math.round(performance.now());
    this.o.log.info({ services: this.services.count, pruned, writes: writer.writes }, 'initial export synced');
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.pods.stop();
    await Promise.all(this.informers.map((i) => i.stop()));
    await this.o.writer.idle();
    await this.presence.stop();
  }

  /** After the etcd client was replaced (identity renewal): heartbeat and markers move to a new lease. */
  async moveLease(): Promise<void> {
    if (!this.synced || this.stopped) return;
    await this.presence.move();
  }

  status(): ExportStatus {
    return {
      cluster: this.o.cluster,
      clusterId: this.o.clusterId,
      synced: this.synced,
      podCidrs: this.nodes.podCidrs(),
      services: this.services.status(),
      identities: this.pods.identities,
      ips: this.pods.ips,
      nodes: this.nodes.count,
      etcd: { backlog: this.o.writer.backlog, writes: this.o.writer.writes, lastError: this.etcdHealth.lastError },
      watchRestarts: this.informers.reduce((n, i) => n + i.restarts, 0),
      initialSyncMs: this.initialSyncMs,
      rssBytes: process.memoryUsage.rss(),
    };
  }

  /** A failed write the StateWriter reports (and counts itself): shown in status. */
  noteEtcdError(err: unknown): void {
    this.etcdHealth.note(err);
  }

  private watch<T extends KubeObject>(resource: string, path: string, onEvent: (type: 'add' | 'update' | 'delete', obj: T) => void): RunningInformer<KubeObject> {
    return startInformer<T>({
      kc: this.o.kc,
      path,
      list: () => this.o.rest.list(path),
      onEvent,
      onRestart: (err, attempt) => {
        this.o.metrics.watchRestarts.inc({ resource });
        this.o.log.warn({ resource, attempt, err: (err as Error)?.message }, 'kubernetes watch restarting');
      },
    });
  }
}
