// X.509-SVIDs made before their pods ask. An SVID names a SPIFFE ID (namespace + service account), so one
// serves every pod of that identity on this node: the cache is keyed by the identity that the pod object the
// Kubernetes API binds to this node names, which is exactly what attestation proves about a caller (never
// anything a caller says). As soon as the API binds a pod of an identity not yet held, its SVID is signed,
// batched with the others of the same moment into one node-CA call; it is renewed at half-life and dropped
// when no pod of its identity remains on the node.
import { X509Certificate } from 'node:crypto';
import type { X509SvidEntry } from '../../../mtls/workload-api/server.js';
import { newKeyAndCsr } from '../../../mtls/x509.js';
import type { PodRef } from '../../../mesh/kube/names.js';

/** The identity of a pod as the API object names it: `<namespace>/<service account>`. */
export type IdentityKey = string;

export const identityKey = (namespace: string, serviceAccount: string): IdentityKey => `${namespace}/${serviceAccount}`;

/** One signing result, as the node CA's batch call answers it. */
export type SignResult = { svid: { spiffeId: string; certificateDer: Buffer; bundleDer: Buffer; expiresAtMs: number } } | { error: { code: number; details: string } };

/** Signs many CSRs in one call, one result per request in order (the node CA's SignX509SVIDs). */
export type BatchSigner = (requests: { pod: PodRef; csr: Buffer }[]) => Promise<SignResult[]>;

interface Held {
  entry: X509SvidEntry;
  expiresAt: number;
  issuedAt: number;
  serial: string;
}

interface IdentityState {
  /** Uids of this identity's live pods on the node; any of them may stand for it at the node CA. */
  pods: Map<string, PodRef>;
  held?: Held;
  /** The signing under way, if any: callers arriving meanwhile wait for it. */
  pending?: Promise<Held>;
  timer?: NodeJS.Timeout;
  listeners: Set<() => void>;
}

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

/** The node CA takes at most this many per call (apiserver/node-ca/server.ts). */
const MAX_BATCH = 256;
const RETRY_MS = 5000;

export class SvidCache {
  private readonly identities = new Map<IdentityKey, IdentityState>();
  private readonly podIdentity = new Map<string, IdentityKey>();
  private queue: { key: IdentityKey; resolve: (h: Held) => void; reject: (e: Error) => void }[] = [];
  private flushScheduled = false;
  private stopped = false;
  readonly stats = { issued: 0, renewed: 0, preIssued: 0, signCalls: 0, signFailures: 0, servedFromCache: 0, servedAfterSigning: 0, dropped: 0 };

  constructor(private readonly o: { sign: BatchSigner; log: Log; now?: () => number; /** After every SVID signed (issued or renewed). */ onSigned?: () => void }) {}

  private now(): number {
    return this.o.now?.() ?? Date.now();
  }

  /** A pod the API binds to this node (added or updated, not finished): its identity's SVID is made now. */
  podBound(pod: PodRef, serviceAccount: string): void {
    const key = identityKey(pod.namespace, serviceAccount);
    const before = this.podIdentity.get(pod.uid);
    if (before && before !== key) this.podGone(pod.uid);
    this.podIdentity.set(pod.uid, key);
    let s = this.identities.get(key);
    if (!s) {
      s = { pods: new Map(), listeners: new Set() };
      this.identities.set(key, s);
    }
    s.pods.set(pod.uid, pod);
    if (!s.held && !s.pending) {
      this.stats.preIssued++;
      void this.issue(key, s).catch((err: Error) => this.retryLater(key, s, err));
    }
  }

  /** A pod deleted or finished: its identity's SVID goes once no pod of that identity is left here. */
  podGone(uid: string): void {
    const key = this.podIdentity.get(uid);
    if (!key) return;
    this.podIdentity.delete(uid);
    const s = this.identities.get(key);
    if (!s) return;
    s.pods.delete(uid);
    if (s.pods.size > 0) return;
    clearTimeout(s.timer);
    this.identities.delete(key);
    this.stats.dropped++;
  }

  /** The SVID of the identity attestation found, from the cache or (not signed yet, or expired) signed now. */
  async get(key: IdentityKey): Promise<X509SvidEntry> {
    const s = this.identities.get(key);
    if (!s) throw new Error(`no pod of ${key} is bound to this node`);
    if (s.held && s.held.expiresAt > this.now()) {
      this.stats.servedFromCache++;
      return s.held.entry;
    }
    const held = await (s.pending ?? this.issue(key, s));
    this.stats.servedAfterSigning++;
    return held.entry;
  }

  /** The leaf certificates (DER) of every SVID held now. */
  certificates(): Buffer[] {
    return [...this.identities.values()].flatMap((s) => (s.held ? [s.held.entry.certChainDer] : []));
  }

  /** Signs every identity here (held or not yet signed) now: a new node CA, or a new CA signing at it. */
  renewAll(): void {
    for (const [key, s] of this.identities) if (!s.pending) void this.renew(key, s);
  }

  /** Calls `listener` when the identity's SVID is renewed; returns the unsubscribe function. */
  subscribe(key: IdentityKey, listener: () => void): () => void {
    const s = this.identities.get(key);
    s?.listeners.add(listener);
    return () => s?.listeners.delete(listener);
  }

  private issue(key: IdentityKey, s: IdentityState): Promise<Held> {
    const renewal = s.held !== undefined;
    const pending = new Promise<Held>((resolve, reject) => {
      this.queue.push({ key, resolve, reject });
      this.scheduleFlush();
    }).then(
      (held) => {
        if (s.pending === pending) s.pending = undefined;
        if (this.identities.get(key) !== s || this.stopped) return held; // its last pod went while it was signed
        s.held = held;
        if (renewal) this.stats.renewed++;
        else this.stats.issued++;
        clearTimeout(s.timer);
        // Renew at half-life; the identity's streams get the new SVID as soon as it is signed.
        s.timer = setTimeout(() => void this.renew(key, s), Math.max(1000, (held.expiresAt - this.now()) / 2));
        s.timer.unref();
        if (renewal) for (const l of s.listeners) l();
        this.o.onSigned?.();
        return held;
      },
      (err: Error) => {
        if (s.pending === pending) s.pending = undefined;
        throw err;
      },
    );
    s.pending = pending;
    return pending;
  }

  private async renew(key: IdentityKey, s: IdentityState): Promise<void> {
    if (this.identities.get(key) !== s) return;
    try {
      await this.issue(key, s);
    } catch (err) {
      this.retryLater(key, s, err as Error);
    }
  }

  private retryLater(key: IdentityKey, s: IdentityState, err: Error): void {
    if (this.identities.get(key) !== s || this.stopped) return;
    this.o.log.warn({ identity: key, err: err.message }, `signing the SVID failed, retrying in ${RETRY_MS / 1000} s`);
    clearTimeout(s.timer);
    s.timer = setTimeout(() => void this.renew(key, s), RETRY_MS);
    s.timer.unref();
  }

  /** Everything queued in this turn of the event loop (one API watch delivery) goes in one call. */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    setImmediate(() => {
      this.flushScheduled = false;
      const queued = this.queue;
      this.queue = [];
      for (let i = 0; i < queued.length; i += MAX_BATCH) void this.signBatch(queued.slice(i, i + MAX_BATCH));
    });
  }

  private async signBatch(batch: SvidCache['queue']): Promise<void> {
    // Any live pod of the identity stands for it; the node CA checks it is bound here and names that identity.
    const ready: { item: (typeof batch)[number]; pod: PodRef; keyPkcs8Der: Buffer; csr: Buffer }[] = [];
    for (const item of batch) {
      const pod = this.identities.get(item.key)?.pods.values().next().value;
      if (!pod) {
        item.reject(new Error(`no pod of ${item.key} is bound to this node any more`));
        continue;
      }
      const { keyPkcs8Der, csrDer } = await newKeyAndCsr();
      ready.push({ item, pod, keyPkcs8Der, csr: csrDer });
    }
    if (ready.length === 0) return;
    this.stats.signCalls++;
    let results: SignResult[];
    try {
      results = await this.o.sign(ready.map((r) => ({ pod: r.pod, csr: r.csr })));
    } catch (err) {
      this.stats.signFailures++;
      for (const r of ready) r.item.reject(err as Error);
      return;
    }
    const issuedAt = this.now();
    ready.forEach((r, i) => {
      const res = results[i]!;
      if ('error' in res) {
        this.stats.signFailures++;
        return r.item.reject(Object.assign(new Error(`node CA: ${res.error.details}`), { code: res.error.code }));
      }
      const { svid } = res;
      r.item.resolve({
        entry: { spiffeId: svid.spiffeId, certChainDer: svid.certificateDer, keyPkcs8Der: r.keyPkcs8Der, bundleDer: svid.bundleDer },
        expiresAt: svid.expiresAtMs,
        issuedAt,
        serial: new X509Certificate(svid.certificateDer).serialNumber,
      });
    });
  }

  /** What is held now, for /v1/workload: per identity its SPIFFE ID, pods, and when its SVID was signed. */
  held(): { identity: IdentityKey; spiffeId?: string; pods: number; issuedAtMs?: number; expiresAtMs?: number; serial?: string }[] {
    return [...this.identities].map(([identity, s]) => ({ identity, spiffeId: s.held?.entry.spiffeId, pods: s.pods.size, issuedAtMs: s.held?.issuedAt, expiresAtMs: s.held?.expiresAt, serial: s.held?.serial }));
  }

  stop(): void {
    this.stopped = true;
    for (const s of this.identities.values()) clearTimeout(s.timer);
  }
}
