// Security identities: one numeric ID per distinct security label set of pods, Cilium-compatible layout
// (cluster ID in bits 16-23, a local ID in bits 0-15), allocated atomically in the mesh etcd so two
// exporters of one cluster (an HA pair, or a restart racing its predecessor) never hand out one ID twice.
import { createHash } from 'node:crypto';
import type { V1Namespace, V1Pod } from '@kubernetes/client-node';

/** Labels that vary per pod instance and would give every rollout a new identity. */
const IGNORED_LABELS = new Set(['pod-template-hash', 'controller-revision-hash', 'pod-template-generation', 'statefulset.kubernetes.io/pod-name', 'apps.kubernetes.io/pod-index']);
/** Placement, not security: 1.36 copies the node's topology labels onto pods. */
const IGNORED_LABEL_PREFIXES = ['topology.kubernetes.io/'];
export const FIRST_LOCAL_ID = 256;
export const MAX_LOCAL_ID = 0xffff;

export function identityLabels(cluster: string, pod: V1Pod, ns: V1Namespace | undefined): Record<string, string> {
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

/** The storage an allocator needs: an atomic create-if-absent of two keys, and reads. */
export interface IdentityStore {
  /** The local ID already bound to this label hash, if any. */
  lookup(hash: string): Promise<number | undefined>;
  /** Binds hash → localId only if neither is bound yet; false if either was taken. */
  tryBind(hash: string, localId: number): Promise<boolean>;
  /** Every local ID bound so far (to skip them when choosing). */
  boundIds(): Promise<Set<number>>;
}

export class IdentityAllocator {
  private readonly byHash = new Map<string, number>();
  private used?: Set<number>;
  private next = FIRST_LOCAL_ID;
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly clusterId: number,
    private readonly store: IdentityStore,
  ) {}

  /** The identity number for a label set, allocating one on first sight. Serialized: IDs stay dense. */
  allocate(labels: Record<string, string>): Promise<number> {
    const hash = labelsHash(labels);
    const known = this.byHash.get(hash);
    if (known !== undefined) return Promise.resolve(identityNumber(this.clusterId, known));
    const result = this.chain.then(() => this.allocateSlow(hash));
    this.chain = result.catch(() => {});
    return result;
  }

  private async allocateSlow(hash: string): Promise<number> {
    const cached = this.byHash.get(hash);
    if (cached !== undefined) return identityNumber(this.clusterId, cached);
    this.used ??= await this.store.boundIds();
    for (let attempts = 0; attempts <= MAX_LOCAL_ID; attempts++) {
      const existing = await this.store.lookup(hash);
      if (existing !== undefined) {
        this.byHash.set(hash, existing);
        this.used.add(existing);
        return identityNumber(this.clusterId, existing);
      }
      while (this.used.has(this.next)) this.next = this.next >= MAX_LOCAL_ID ? FIRST_LOCAL_ID : this.next + 1;
      const candidate = this.next;
      this.used.add(candidate);
      if (this.used.size > MAX_LOCAL_ID - FIRST_LOCAL_ID + 1) break;
      if (await this.store.tryBind(hash, candidate)) {
        this.byHash.set(hash, candidate);
        return identityNumber(this.clusterId, candidate);
      }
    }
    throw new Error(`no free security identity left in cluster ${this.clusterId} (${MAX_LOCAL_ID - FIRST_LOCAL_ID + 1} label sets in use)`);
  }
}
