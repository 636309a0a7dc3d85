// Pods → their security identities and IP entries. Every live pod (has an IP, not hostNetwork, not done,
// its namespace known) binds the identity of its label set (allocated through identity.ts) and exports
// `ips/<ip>` → that identity; the identity itself is exported while at least one pod uses it. An identity
// nobody uses is released by the periodic GC after the grace. A pod whose allocation fails stays unexported
// and is retried with backoff; everything else goes on.

import { keys } from '../../mesh/schema/keys.js';
import { encodeValue, IdentityValue, IpEntry } from '../../mesh/schema/values.js';
import { nsName, type ExportContext } from './context.js';
import { DEFAULT_IDENTITY_GC_GRACE_MS, IdentityAllocator, IdentitySpaceExhaustedError, identityLabels, type ReleasableIdentityStore } from './identity.js';
import type { WarningEvents } from './warning-events.js';
import type { Namespace, Pod } from '../../mesh/kube/objects.js';
import { backoffDelay } from '../../mesh/backoff.js';

/**
 * Backoff of a pod whose identity allocation failed: 1 s doubling, up to 5 s for a mesh etcd error (back
 * soon after etcd is) and 1 min for a full ID space (only a release frees one, and that retries at once).
 */
const IDENTITY_RETRY_BASE_MS = 1_000;
const IDENTITY_RETRY_MAX_MS = { store: 5_000, exhausted: 60_000 };

interface PodIdentitiesOptions extends ExportContext {
  clusterId: number;
  identities: ReleasableIdentityStore;
  /** An identity unused this long is released (its ID handed out again); default 10 min. */
  gcGraceMs?: number;
  /** The local identity ID range, inclusive (tests shrink it to fill it). */
  localIds?: { first: number; last: number };
  events: WarningEvents;
  /** A mesh etcd call of the identity store failed. */
  onEtcdError: (err: unknown) => void;
}

export class PodIdentities {
  private readonly pods = new Map<string, Pod>();
  private readonly namespaces = new Map<string, Namespace>();
  /** Per pod: the IP and identity it contributes, so removal releases exactly those. */
  private readonly podExport = new Map<string, { ip: string; identity: number }>();
  private readonly ipOwner = new Map<string, string>();
  private readonly identityRefs = new Map<number, { labels: Record<string, string>; refs: number }>();
  /** Per pod: bumped by every recompute, so a slower allocation never overwrites a newer one's outcome. */
  private readonly podGeneration = new Map<string, number>();
  private readonly pendingPods = new Set<Promise<void>>();
  private readonly allocator: IdentityAllocator;
  /** Pods whose identity allocation failed: attempts so far (for the backoff), and whether the Event is out. */
  private readonly identityRetries = new Map<string, { attempts: number; reported: boolean }>();
  private gcTimer?: NodeJS.Timeout;
  private stopped = false;

  constructor(private readonly o: PodIdentitiesOptions) {
    this.allocator = new IdentityAllocator(o.clusterId, o.identities, {
      gcGraceMs: o.gcGraceMs,
      firstLocalId: o.localIds?.first,
      lastLocalId: o.localIds?.last,
    });
    o.metrics.identityIdsCapacity.set(this.allocator.capacity);
  }

  /** Identities exported (in use by at least one pod). */
  get identities(): number {
    return this.identityRefs.size;
  }

  /** IP entries exported. */
  get ips(): number {
    return this.ipOwner.size;
  }

  onNamespace(type: string, ns: Namespace): void {
    const name = ns.metadata!.name!;
    if (type === 'delete') this.namespaces.delete(name);
    else this.namespaces.set(name, ns);
    for (const pod of this.pods.values()) if (pod.metadata?.namespace === name) this.recomputePod(pod.metadata.uid!);
  }

  onPod(type: string, pod: Pod): void {
    const uid = pod.metadata!.uid!;
    if (type === 'delete') this.pods.delete(uid);
    else this.pods.set(uid, pod);
    this.recomputePod(uid);
  }

  /** Resolves once every allocation started so far (and any it led to) has finished. */
  async settled(): Promise<void> {
    while (this.pendingPods.size > 0) await Promise.all([...this.pendingPods]);
  }

  /** Identity GC, every half grace (1 s to 1 min), until stop(). */
  startGc(): void {
    const grace = this.o.gcGraceMs ?? DEFAULT_IDENTITY_GC_GRACE_MS;
    const every = Math.min(Math.max(grace / 2, 1_000), 60_000);
    this.gcTimer = setTimeout(() => {
      void this.collectIdentities().finally(() => !this.stopped && this.startGc());
    }, every);
    this.gcTimer.unref();
  }

  stop(): void {
    this.stopped = true;
    if (this.gcTimer) clearTimeout(this.gcTimer);
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
      this.o.onEtcdError(err);
      this.o.log.warn({ err: (err as Error).message }, 'security identity garbage collection failed; retrying on the next pass');
      return [];
    } finally {
      this.updateGauges();
    }
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
        this.updateGauges();
      })
      .catch((err: Error) => this.allocationFailed(pod, gen, err));
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
    this.updateGauges();
  }

  /**
   * The pod stays unexported (every other pod and service goes on) and is retried with capped exponential
   * backoff. A full ID space also gets a Warning Event on the pod, once per failure streak.
   */
  private allocationFailed(pod: Pod, gen: number, err: Error): void {
    const uid = pod.metadata!.uid!;
    if (this.podGeneration.get(uid) !== gen) return;
    const retry = this.identityRetries.get(uid) ?? { attempts: 0, reported: false };
    retry.attempts++;
    this.identityRetries.set(uid, retry);
    const exhausted = err instanceof IdentitySpaceExhaustedError;
    this.o.metrics.identityAllocationFailures.inc({ reason: exhausted ? 'exhausted' : 'store' });
    this.updateGauges();
    if (!exhausted) this.o.onEtcdError(err);
    const cap = IDENTITY_RETRY_MAX_MS[exhausted ? 'exhausted' : 'store'];
    const retryInMs = Math.round(backoffDelay(retry.attempts - 1, { minMs: IDENTITY_RETRY_BASE_MS * 1.2, maxMs: cap * 1.2, jitter: 1 / 3 }));
    this.o.log.warn({ pod: nsName(pod), attempt: retry.attempts, retryInMs, err: err.message }, 'security identity allocation failed, pod not exported; retrying');
    if (exhausted && !retry.reported) {
      retry.reported = true;
      this.o.events.post('Pod', pod, 'SecurityIdentitySpaceExhausted', `not exported to the mesh: ${err.message}`);
    }
    setTimeout(() => this.podGeneration.get(uid) === gen && this.recomputePod(uid), retryInMs).unref();
  }

  private updateGauges(): void {
    this.o.metrics.exportedIdentities.set(this.identityRefs.size);
    this.o.metrics.identityIdsBound.set(this.allocator.bound);
  }
}
