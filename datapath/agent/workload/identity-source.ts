// What the node's Workload API serves, from the agent's two sources: the Kubernetes API (the pods bound to
// this node, for attestation) and the local mesh etcd (trust bundles, where the node CA is). SVID keys are
// made here and never leave the node; the apiserver's node CA signs them, before the pods ask (svid-cache.ts):
// one per identity on the node, renewed at half its lifetime and pushed to the streams of its pods.
import { X509Certificate } from 'node:crypto';
import type { KubeConfig } from '@kubernetes/client-node';
import type { Etcd3 } from 'etcd3';
import { openWatch, type MeshWatch } from '../../../mesh/etcd-watch.js';
import type { JSONWebKeySet } from 'jose';
import { startInformer, type RunningInformer } from '../../../mesh/kube/informer.js';
import { retryUntilDone } from '../../../mesh/backoff.js';
import type { KubeRest } from '../../../mesh/kube/rest.js';
import { NodeCaClient } from '../../../mesh/node-ca/client.js';
import { keys } from '../../../mesh/schema/keys.js';
import { decodeJson, NodeCaEndpoint } from '../../../mesh/schema/values.js';
import { jwtBundleOf, validateJwtSvid } from '../../../mtls/svid.js';
import type { Caller, IdentitySource, X509SvidEntry } from '../../../mtls/workload-api/server.js';
import { podUidOfPid } from './attest.js';
import { acceptBundle, type AcceptedBundle } from './bundles.js';
import type { Pod } from '../../../mesh/kube/objects.js';
import type { PodRef } from '../../../mesh/kube/names.js';
import { identityKey, SvidCache, type SignResult } from './svid-cache.js';

/** What attestation proves about a caller: its pod, as the API binds it to this node, and that pod's service account. */
export interface PodIdentity {
  namespace: string;
  name: string;
  uid: string;
  serviceAccount: string;
}

const serviceAccountOf = (pod: Pod) => pod.spec?.serviceAccountName || 'default';
const finished = (pod: Pod) => pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

/** How long a node CA channel replaced after a renewal stays open for the calls still on it. */
const OLD_CHANNEL_DRAIN_MS = 30_000;

export class AgentIdentitySource implements IdentitySource<PodIdentity> {
  private readonly pods = new Map<string, Pod>();
  private readonly svids: SvidCache;
  private readonly bundles = new Map<string, AcceptedBundle>();
  private jwks = new Map<string, JSONWebKeySet>();
  private readonly bundleListeners = new Set<() => void>();
  private informer?: RunningInformer<Pod>;
  private readonly watches = new Map<string, MeshWatch>();
  /** What each followed prefix held at its last listing. */
  private readonly followed = new Map<string, Set<string>>();
  private nodeCa?: { endpoint: string; client: NodeCaClient; signer?: string };
  private endpoint?: string;
  readonly stats = { refusedBundles: 0 };

  constructor(
    private readonly o: { etcd: Etcd3; cluster: string; node: string; kc: KubeConfig; rest: KubeRest; nodeTls: ConstructorParameters<typeof NodeCaClient>[1]; log: Log;
      /** Where this node's pod cgroups live, as /proc/<pid>/cgroup names them (attest.ts). */
      podCgroupParents: readonly string[];
      /** What view() shows changed (a bundle, an SVID signed): the agent publishes its view again. */
      onViewChange?: () => void },
  ) {
    this.svids = new SvidCache({ sign: (requests) => this.signBatch(requests), log: o.log, onSigned: () => o.onViewChange?.() });
  }

  async start(): Promise<void> {
    const fieldSelector = `spec.nodeName=${this.o.node}`;
    this.informer = startInformer<Pod>({
      kc: this.o.kc,
      path: '/api/v1/pods',
      fieldSelector,
      list: () => this.o.rest.list(`/api/v1/pods?fieldSelector=${encodeURIComponent(fieldSelector)}`),
      onEvent: (type, pod) => {
        const uid = pod.metadata?.uid;
        if (!uid) return;
        if (type === 'delete' || finished(pod)) this.forget(uid);
        else {
          this.pods.set(uid, pod);
          this.svids.podBound({ namespace: pod.metadata!.namespace!, name: pod.metadata!.name!, uid }, serviceAccountOf(pod));
        }
      },
      onRestart: (err) => this.o.log.warn({ err: (err as Error)?.message }, 'pod watch restarting'),
    });
    // A new node's etcd user appears when the apiserver sees its Node: until then reads are refused.
    await retryUntilDone('following the trust bundles in the mesh etcd', () => this.follow('the trust bundles', { prefix: keys.bundlesPrefix(this.o.cluster) }, (td, raw) => this.onBundle(td, raw)), this.o.log);
    await retryUntilDone('following the node CA endpoint in the mesh etcd', () => this.follow('the node CA endpoint', { key: keys.nodeCa(this.o.cluster) }, (_key, raw) => this.onNodeCa(raw)), this.o.log);
    await this.informer.synced;
  }

  /**
   * Lists a prefix (or reads one key), then watches from that revision, handing every value (undefined: gone)
   * to `apply` by its key under the prefix ('' for the key). A watch the server cancels (its start revision
   * was compacted while the agent was cut off) ends in a fresh listing: keys gone meanwhile are handed over
   * as gone. (A node's etcd user may read the node CA's key, not a range around it: a key is watched as such.)
   */
  private async follow(what: string, target: { prefix: string } | { key: string }, apply: (name: string, raw: string | undefined) => Promise<void>): Promise<void> {
    const prefix = 'prefix' in target ? target.prefix : target.key;
    const current = await ('prefix' in target ? this.o.etcd.getAll().prefix(prefix) : this.o.etcd.get(prefix)).exec();
    const watch = await openWatch(this.o.etcd, target, Number(current.header.revision) + 1);
    const previous = this.watches.get(what);
    this.watches.set(what, watch);
    await previous?.cancel();
    watch.watcher.on('put', (kv) => void apply(kv.key.toString().slice(prefix.length), kv.value.toString()));
    watch.watcher.on('delete', (kv) => void apply(kv.key.toString().slice(prefix.length), undefined));
    watch.watcher.on('error', (err) => {
      if (this.watches.get(what) !== watch) return;
      this.o.log.warn({ err: err.message }, `${what} watch ended; listing again`);
      void retryUntilDone(`following ${what} in the mesh etcd`, () => this.follow(what, target, apply), this.o.log);
    });
    const listed = new Set(current.kvs.map((kv) => kv.key.toString().slice(prefix.length)));
    for (const name of this.followed.get(what) ?? []) if (!listed.has(name)) await apply(name, undefined);
    this.followed.set(what, listed);
    for (const kv of current.kvs) await apply(kv.key.toString().slice(prefix.length), kv.value.toString());
  }

  /**
   * The node CA the apiserver publishes (it moves when its pod does): one long-lived channel to it, opened at
   * once so the first signing does not pay the handshake. A new node CA (a new apiserver, perhaps with a new
   * CA or SVID lifetime) signs every identity held here again.
   */
  private async onNodeCa(raw: string | undefined): Promise<void> {
    const published = raw === undefined ? undefined : decodeJson(NodeCaEndpoint, raw);
    if (published && this.nodeCa && published.endpoint === this.nodeCa.endpoint) {
      // Same node CA, another CA signing there (a rotation's activate): every SVID held is signed again,
      // by the new CA, and pushed to its pods' streams as it comes.
      if (published.signer !== this.nodeCa.signer) {
        this.o.log.info({ signer: published.signer, was: this.nodeCa.signer }, 'the workload CA signing at the node CA changed: re-issuing every SVID held');
        this.nodeCa.signer = published.signer;
        this.svids.renewAll();
      }
      return;
    }
    if (!published && !this.nodeCa) return;
    this.nodeCa?.client.close();
    this.nodeCa = undefined;
    if (!published) {
      if (raw !== undefined) this.o.log.warn({ raw: raw.slice(0, 200) }, 'ignoring a node CA endpoint that is not one');
      return;
    }
    // The node CA serves with a mesh CA certificate, like the mesh etcd: verified against the mesh CA.
    const client = new NodeCaClient(published.endpoint, this.o.nodeTls);
    client.connect();
    this.nodeCa = { endpoint: published.endpoint, client, signer: published.signer };
    this.endpoint = published.endpoint;
    this.o.log.info({ endpoint: published.endpoint }, 'node CA');
    // The first one signs what pods bound before it was known; a later one, everything again.
    this.svids.renewAll();
  }

  private forget(uid: string): void {
    this.pods.delete(uid);
    this.svids.podGone(uid);
  }

  private async onBundle(trustDomain: string, raw: string | undefined): Promise<void> {
    if (raw === undefined) {
      if (!this.bundles.delete(trustDomain)) return;
      this.o.log.info({ trustDomain }, 'trust bundle removed');
    } else {
      const r = acceptBundle(raw, trustDomain);
      if (!r.ok) {
        this.stats.refusedBundles++;
        this.o.log.warn({ trustDomain, err: r.error }, 'refusing a trust bundle; keeping the last good one');
        return;
      }
      if (this.bundles.get(trustDomain)?.caPem === r.bundle.caPem) return;
      this.bundles.set(trustDomain, r.bundle);
    }
    const jwks = new Map<string, JSONWebKeySet>();
    for (const [td, b] of this.bundles) jwks.set(td, await jwtBundleOf(b.caPem));
    this.jwks = jwks;
    for (const l of this.bundleListeners) l();
    this.o.onViewChange?.();
  }

  /**
   * For the agent's published view: each trust domain's CAs by serial, and how many SVIDs held here each CA
   * of the own bundle signed (`unknown`: none of them) — what `skein ca rotate` waits on.
   */
  view(): { bundles: Record<string, string[]>; svidSigners: Record<string, number> } {
    const bundles = Object.fromEntries([...this.bundles].map(([td, b]) => [td, b.cas.map((c) => c.serialNumber)]));
    const own = [...this.bundles.values()].find((b) => b.own);
    const svidSigners: Record<string, number> = {};
    for (const der of this.svids.certificates()) {
      const by = this.signerOf(der, own);
      svidSigners[by] = (svidSigners[by] ?? 0) + 1;
    }
    return { bundles, svidSigners };
  }

  /** Which CA of the own bundle signed an SVID, remembered per SVID and bundle: the view is built often. */
  private readonly signers = new WeakMap<Buffer, { bundle?: AcceptedBundle; by: string }>();
  private signerOf(der: Buffer, own: AcceptedBundle | undefined): string {
    const known = this.signers.get(der);
    if (known && known.bundle === own) return known.by;
    const leaf = new X509Certificate(der);
    const by = own?.cas.find((ca) => leaf.checkIssued(ca) && leaf.verify(ca.publicKey))?.serialNumber ?? 'unknown';
    this.signers.set(der, { bundle: own, by });
    return by;
  }

  private client(): NodeCaClient {
    if (!this.nodeCa) throw new Error('no node CA published in the mesh etcd yet (is skein-apiserver running with POD_IP set?)');
    return this.nodeCa.client;
  }

  /**
   * After the node identity was renewed: a new channel to the same node CA, whose handshake presents the new
   * certificate (the node CA authenticates calls by the certificate of their connection, and refuses to renew
   * for one that has expired). Calls in flight finish on the old channel, closed a little later.
   */
  reconnectNodeCa(): void {
    const current = this.nodeCa;
    if (!current) return;
    const client = new NodeCaClient(current.endpoint, this.o.nodeTls);
    client.connect();
    this.nodeCa = { ...current, client };
    setTimeout(() => current.client.close(), OLD_CHANNEL_DRAIN_MS).unref();
  }

  /** The node's own identity renewed over the node CA channel (node-identity-renewal.ts). */
  renewNodeIdentity(csrPem: string): Promise<{ certificatePem: string; caPem: string }> {
    return this.client()
      .renewNodeIdentity(csrPem)
      .then((r) => ({ certificatePem: r.certificate_pem, caPem: r.ca_pem }));
  }

  async attest(caller: Caller): Promise<PodIdentity | undefined> {
    // The cgroup of the process that opened the connection, read while it lives (a reused pid is not it).
    const uid = caller.process.readWhileAlive((pid) => podUidOfPid(pid, this.o.podCgroupParents));
    const pod = uid ? this.pods.get(uid) : undefined;
    if (!pod || finished(pod)) return undefined;
    return { namespace: pod.metadata!.namespace!, name: pod.metadata!.name!, uid: uid!, serviceAccount: serviceAccountOf(pod) };
  }

  async x509Svids(w: PodIdentity): Promise<X509SvidEntry[]> {
    return [await this.svids.get(identityKey(w.namespace, w.serviceAccount))];
  }

  /** The node CA's batch call, as the cache wants it. */
  private async signBatch(requests: { pod: PodRef; csr: Buffer }[]): Promise<SignResult[]> {
    const results = await this.client().signX509Batch(requests);
    return results.map((r) =>
      r.svid ? { svid: { spiffeId: r.svid.spiffe_id, certificateDer: r.svid.certificate, bundleDer: r.svid.bundle, expiresAtMs: r.svid.expires_at_unix_ms } } : { error: { code: r.error?.code ?? 2, details: r.error?.details ?? 'no result' } },
    );
  }

  x509Bundles(): ReadonlyMap<string, Buffer> {
    return new Map([...this.bundles].map(([td, b]) => [td, b.der]));
  }

  async jwtSvids(w: PodIdentity, audience: string[], spiffeId?: string): Promise<{ spiffeId: string; token: string }[]> {
    const signed = await this.client().signJwt({ namespace: w.namespace, name: w.name, uid: w.uid }, audience);
    return spiffeId && spiffeId !== signed.spiffe_id ? [] : [{ spiffeId: signed.spiffe_id, token: signed.token }];
  }

  jwtBundles(): ReadonlyMap<string, JSONWebKeySet> {
    return this.jwks;
  }

  async validateJwtSvid(token: string, audience: string): Promise<{ spiffeId: string; claims: Record<string, unknown> }> {
    return validateJwtSvid(token, audience, this.jwks);
  }

  subscribe(w: PodIdentity | undefined, listener: () => void): () => void {
    this.bundleListeners.add(listener);
    const unsubscribe = w ? this.svids.subscribe(identityKey(w.namespace, w.serviceAccount), listener) : undefined;
    return () => {
      this.bundleListeners.delete(listener);
      unsubscribe?.();
    };
  }

  status() {
    const held = this.svids.held();
    return { endpoint: this.endpoint, pods: this.pods.size, svids: held.length, identities: held, bundles: [...this.bundles.keys()].sort(), ...this.stats, ...this.svids.stats };
  }

  async stop(): Promise<void> {
    this.svids.stop();
    for (const w of this.watches.values()) await w.cancel();
    await this.informer?.stop();
    this.nodeCa?.client.close();
  }
}
