// Security identities: one numeric ID per distinct security label set of pods, Cilium-compatible layout
// (cluster ID in bits 16-23, a local ID in bits 0-15), allocated atomically in the mesh etcd so two
// exporters of one cluster (an HA pair, or a restart racing its predecessor) never hand out one ID twice.
// An ID is finite (65,280 per cluster), so a binding nobody has used for a grace period is released and
// its ID handed out again; per-instance labels are left out so Jobs and rollouts do not burn IDs.
import { createHash } from 'node:crypto';
import type { Namespace, Pod } from '../../mesh/kube/objects.js';

/**
 * Labels that vary per pod instance or per run (rollouts, StatefulSet ordinals, every Job and CronJob run):
 * kept, each would mint a new identity and let anyone who can create pods or Jobs use up the ID space.
 */
const IGNORED_LABELS = new Set([
  'pod-template-hash',
  'controller-revision-hash',
  'pod-template-generation',
  'statefulset.kubernetes.io/pod-name',
  'apps.kubernetes.io/pod-index',
  'controller-uid',
  'batch.kubernetes.io/controller-uid',
  'job-name',
  'batch.kubernetes.io/job-name',
  'batch.kubernetes.io/job-completion-index',
]);
/** Placement, not security: 1.36 copies the node's topology labels onto pods. */
const IGNORED_LABEL_PREFIXES = ['topology.kubernetes.io/'];
const FIRST_LOCAL_ID = 256;
export const MAX_LOCAL_ID = 0xffff;
/** Like Cilium's identity GC: long enough that a workload restarting or rescheduling keeps its identity. */
export const DEFAULT_IDENTITY_GC_GRACE_MS = 10 * 60_000;

export function identityLabels(cluster: string, pod: Pod, ns: Namespace | undefined): Record<string, string> {
  const labels: Record<string, string> = {
    'k8s:io.kubernetes.pod.namespace': pod.metadata?.namespace ?? 'default',
    'k8s:io.kubernetes.pod.serviceaccount': pod.spec?.serviceAccountName ?? 'default',
    'k8s:io.skein.cluster': cluster,
  };
  for (const [k, v] of Object.entries(pod.metadata?.labels ?? {})) {
    if (!IGNORED_LABELS.has(k) && !IGNORED_LABEL_PREFIXES.some((p) => k.startsWith(p))) labels[`k8s:${k}`] = v;
  }
  for (const [k, v] of Object.entries(ns?.metadata?.labels ?? {})) labels[`k8s:io.kubernetes.namespace.labels.${k}`] = v;
  return Object.fromEntries(Object.entries(labels).sort(([a], [b]) => a.localeCompare(b)));
}

export function labelsHash(labels: Record<string, string>): string {
  return createHash('sha256').update(JSON.stringify(labels)).digest('hex');
}

export const identityNumber = (clusterId: number, localId: number) => (clusterId << 16) | localId;
const localIdOf = (identity: number) => identity & 0xffff;

/** Every local ID of the cluster is bound: no new label set gets an identity until one is released. */
export class IdentitySpaceExhaustedError extends Error {
  override readonly name = 'IdentitySpaceExhaustedError';
  constructor(
    readonly clusterId: number,
    readonly capacity: number,
  ) {
    super(
      `no free security identity in cluster ${clusterId}: all ${capacity} local IDs are bound to label sets in use or unused for less than --identity-gc-grace; ` +
        'delete workloads with one-off label sets (or lower --identity-gc-grace) to free IDs',
    );
  }
}

/** The storage an allocator needs: an atomic create-if-absent of two keys, and reads. */
export interface IdentityStore {
  /** The local ID already bound to this label hash, if any. */
  lookup(hash: string): Promise<number | undefined>;
  /** Binds hash → localId only if neither is bound yet; false if either was taken. */
  tryBind(hash: string, localId: number): Promise<boolean>;
  /** Every local ID bound so far (to skip them when choosing). */
  boundIds(): Promise<Set<number>>;
}

/** A store whose bindings can be listed and released (identity garbage collection). */
export interface ReleasableIdentityStore extends IdentityStore {
  /** Every binding, label hash → local ID, including those an earlier process made. */
  bindings(): Promise<Map<string, number>>;
  /**
   * Deletes hash → localId atomically, only if the two are still bound to each other and the identity is
   * not exported (nobody uses it); false if any of that no longer holds.
   */
  release(hash: string, localId: number): Promise<boolean>;
}

export interface IdentityAllocatorOptions {
  /** The local ID range, inclusive (default FIRST_LOCAL_ID..MAX_LOCAL_ID; tests shrink it). */
  firstLocalId?: number;
  lastLocalId?: number;
  /** How long a binding stays after its last user went away, or after it was first seen unused. */
  gcGraceMs?: number;
  now?: () => number;
}

interface Binding {
  hash: string;
  localId: number;
  inUse: boolean;
  /** When it was last unused-but-touched: handed out, lost its last user, or first seen. */
  idleSince: number;
}

export class IdentityAllocator {
  private readonly byHash = new Map<string, Binding>();
  private readonly byId = new Map<number, Binding>();
  private used?: Set<number>;
  private readonly first: number;
  private readonly last: number;
  private readonly graceMs: number;
  private readonly now: () => number;
  private cursor: number;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly clusterId: number,
    private readonly store: ReleasableIdentityStore,
    o: IdentityAllocatorOptions = {},
  ) {
    this.first = o.firstLocalId ?? FIRST_LOCAL_ID;
    this.last = o.lastLocalId ?? MAX_LOCAL_ID;
    if (!Number.isInteger(this.first) || !Number.isInteger(this.last) || this.first < 1 || this.last > MAX_LOCAL_ID || this.first > this.last) {
      throw new Error(`identity local ID range ${this.first}..${this.last}: give integers with 1 <= first <= last <= ${MAX_LOCAL_ID}`);
    }
    this.graceMs = o.gcGraceMs ?? DEFAULT_IDENTITY_GC_GRACE_MS;
    this.now = o.now ?? (() => Date.now());
    this.cursor = this.first;
  }

  get capacity(): number {
    return this.last - this.first + 1;
  }

  /** Local IDs known to be bound in the store (in use, or waiting out the grace). */
  get bound(): number {
    return this.used?.size ?? this.byId.size;
  }

  /**
   * The identity number for a label set, allocating one on first sight. Serialized: IDs stay dense.
   * Rejects with IdentitySpaceExhaustedError when every local ID is bound.
   */
  allocate(labels: Record<string, string>): Promise<number> {
    const hash = labelsHash(labels);
    const known = this.byHash.get(hash);
    if (known) return Promise.resolve(this.handOut(known));
    return this.serialized(() => this.allocateSlow(hash));
  }

  /** The exporter's view: the identity gained its first user (it must not be released). */
  markInUse(identity: number): void {
    const b = this.byId.get(localIdOf(identity));
    if (b) b.inUse = true;
  }

  /** The identity lost its last user: it is released once it stays unused for the grace. */
  markUnused(identity: number): void {
    const b = this.byId.get(localIdOf(identity));
    if (!b) return;
    b.inUse = false;
    b.idleSince = this.now();
  }

  /**
   * Garbage collection: relists the store's bindings (picking up an earlier process's, unused since now),
   * then releases every binding unused for the grace. Returns the identities released.
   */
  collectGarbage(): Promise<number[]> {
    return this.serialized(() => this.sweep());
  }

  private serialized<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.chain.then(fn);
    this.chain = result.catch(() => {});
    return result;
  }

  private handOut(b: Binding): number {
    // Handing out counts as a use: the caller marks it in use right after, and a sweep in between must not win.
    if (!b.inUse) b.idleSince = this.now();
    return identityNumber(this.clusterId, b.localId);
  }

  private track(hash: string, localId: number, idleSince = this.now()): Binding {
    const b: Binding = { hash, localId, inUse: false, idleSince };
    this.byHash.set(hash, b);
    this.byId.set(localId, b);
    return b;
  }

  private forget(b: Binding): void {
    if (this.byHash.get(b.hash) === b) this.byHash.delete(b.hash);
    if (this.byId.get(b.localId) === b) this.byId.delete(b.localId);
  }

  private remember(b: Binding): void {
    this.byHash.set(b.hash, b);
    this.byId.set(b.localId, b);
  }

  /** The next unbound local ID after the cursor, or undefined when all are bound. At most one pass. */
  private pickFree(used: Set<number>): number | undefined {
    for (let i = 0; i < this.capacity; i++) {
      const id = this.first + ((this.cursor - this.first + i) % this.capacity);
      if (!used.has(id)) {
        this.cursor = id === this.last ? this.first : id + 1;
        return id;
      }
    }
    return undefined;
  }

  private async allocateSlow(hash: string): Promise<number> {
    const cached = this.byHash.get(hash);
    if (cached) return this.handOut(cached);
    const used = (this.used ??= await this.store.boundIds());
    // Ends: every round returns, throws, or adds one more ID to `used`, which holds at most `capacity` of ours.
    for (;;) {
      const existing = await this.store.lookup(hash);
      if (existing !== undefined) {
        used.add(existing);
        return this.handOut(this.track(hash, existing));
      }
      const candidate = this.pickFree(used);
      if (candidate === undefined) throw new IdentitySpaceExhaustedError(this.clusterId, this.capacity);
      used.add(candidate);
      if (await this.store.tryBind(hash, candidate)) return this.handOut(this.track(hash, candidate));
    }
  }

  private async sweep(): Promise<number[]> {
    await this.reconcile(await this.store.bindings());
    const released: number[] = [];
    for (const b of [...this.byHash.values()]) {
      // Checked right before releasing: a pod may have taken the identity up while earlier releases ran.
      if (b.inUse || this.now() - b.idleSince < this.graceMs) continue;
      // Off the fast path first, so an allocation of this label set waits for the outcome.
      this.forget(b);
      let done = false;
      try {
        done = await this.store.release(b.hash, b.localId);
      } finally {
        // Not released (say, its export key is not deleted yet, or etcd failed): the next sweep retries.
        if (!done) this.remember(b);
      }
      if (done) {
        this.used?.delete(b.localId);
        released.push(identityNumber(this.clusterId, b.localId));
      }
    }
    return released;
  }

  /** Makes the tracked bindings and the used set equal the store's, keeping what we already knew. */
  private async reconcile(listed: Map<string, number>): Promise<void> {
    const now = this.now();
    for (const b of [...this.byHash.values()]) {
      if (listed.get(b.hash) === b.localId) continue;
      if (b.inUse && !listed.has(b.hash) && (await this.store.tryBind(b.hash, b.localId))) continue; // removed behind our back while in use: restore
      this.forget(b);
    }
    for (const [hash, localId] of listed) if (!this.byHash.has(hash)) this.track(hash, localId, now);
    this.used = new Set(listed.values());
    for (const b of this.byId.values()) this.used.add(b.localId);
  }
}
