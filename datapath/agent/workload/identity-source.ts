// What the node's Workload API serves, from the agent's two sources: the Kubernetes API (the pods bound to
// this node, for attestation) and the local mesh etcd (trust bundles, where the node CA is). SVID keys are
// made here and never leave the node; the apiserver's node CA signs them. Each SVID is renewed at half its
// lifetime and pushed to the streams of its pod.
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
import { newKeyAndCsr } from '../../../mtls/x509.js';
import { podUidOfPid } from './attest.js';
import { acceptBundle, type AcceptedBundle } from './bundles.js';
import type { Pod } from '../../../mesh/kube/objects.js';

export interface PodIdentity {
  namespace: string;
  name: string;
  uid: string;
}

interface CachedSvid {
  entry: X509SvidEntry;
  expiresAt: number;
  timer?: NodeJS.Timeout;
}

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

export class AgentIdentitySource implements IdentitySource<PodIdentity> {
  private readonly pods = new Map<string, Pod>();
  private readonly svids = new Map<string, CachedSvid>();
  private readonly inflight = new Map<string, Promise<CachedSvid>>();
  private readonly bundles = new Map<string, AcceptedBundle>();
  private jwks = new Map<string, JSONWebKeySet>();
  private readonly podListeners = new Map<string, Set<() => void>>();
  private readonly bundleListeners = new Set<() => void>();
  private informer?: RunningInformer<Pod>;
  private watch?: MeshWatch;
  private nodeCa?: { endpoint: string; client: NodeCaClient };
  private endpoint?: string;
  readonly stats = { issued: 0, renewed: 0, refusedBundles: 0 };

  constructor(
    private readonly o: { etcd: Etcd3; cluster: string; node: string; kc: KubeConfig; rest: KubeRest; nodeTls: { caPem: string; certPem: string; keyPem: string }; log: Log;
      /** Where this node's pod cgroups live, as /proc/<pid>/cgroup names them (attest.ts). */
      podCgroupParents: readonly string[] },
  ) {}

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
        if (type === 'delete') this.forget(uid);
        else this.pods.set(uid, pod);
      },
      onRestart: (err) => this.o.log.warn({ err: (err as Error)?.message }, 'pod watch restarting'),
    });
    // A new node's etcd user appears when the apiserver sees its Node: until then reads are refused.
    await retryUntilDone('following the trust bundles in the mesh etcd', () => this.followBundles(), this.o.log);
    await this.informer.synced;
  }

  /**
   * Lists the bundles, then watches from that revision. A watch the server cancels (its start revision was
   * compacted while the agent was cut off) ends in a fresh listing: bundles gone meanwhile are dropped.
   */
  private async followBundles(): Promise<void> {
    const prefix = keys.bundlesPrefix(this.o.cluster);
    const current = await this.o.etcd.getAll().prefix(prefix).exec();
    const watch = await openWatch(this.o.etcd, { prefix }, Number(current.header.revision) + 1);
    const previous = this.watch;
    this.watch = watch;
    await previous?.cancel();
    watch.watcher.on('put', (kv) => void this.onBundle(kv.key.toString().slice(prefix.length), kv.value.toString()));
    watch.watcher.on('delete', (kv) => void this.onBundle(kv.key.toString().slice(prefix.length), undefined));
    watch.watcher.on('error', (err) => {
      if (this.watch !== watch) return;
      this.o.log.warn({ err: err.message }, 'trust bundle watch ended; listing again');
      void retryUntilDone('following the trust bundles in the mesh etcd', () => this.followBundles(), this.o.log);
    });
    const listed = new Set(current.kvs.map((kv) => kv.key.toString().slice(prefix.length)));
    for (const td of [...this.bundles.keys()]) if (!listed.has(td)) await this.onBundle(td, undefined);
    for (const kv of current.kvs) await this.onBundle(kv.key.toString().slice(prefix.length), kv.value.toString());
  }

  private forget(uid: string): void {
    this.pods.delete(uid);
    clearTimeout(this.svids.get(uid)?.timer);
    this.svids.delete(uid);
    this.podListeners.delete(uid);
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
  }

  /** The node CA client for the endpoint the apiserver last published (it moves when its pod does). */
  private async client(): Promise<NodeCaClient> {
    const raw = (await this.o.etcd.get(keys.nodeCa(this.o.cluster)).string()) ?? undefined;
    const published = raw ? decodeJson(NodeCaEndpoint, raw) : undefined;
    if (!published) throw new Error('no node CA published in the mesh etcd yet (is skein-apiserver running with POD_IP set?)');
    if (this.nodeCa?.endpoint !== published.endpoint) {
      this.nodeCa?.client.close();
      // The node CA serves with a mesh CA certificate, like the mesh etcd: verified against the mesh CA.
      this.nodeCa = { endpoint: published.endpoint, client: new NodeCaClient(published.endpoint, this.o.nodeTls) };
      this.endpoint = published.endpoint;
    }
    return this.nodeCa.client;
  }

  async attest(caller: Caller): Promise<PodIdentity | undefined> {
    // The cgroup of the process that opened the connection, read while it lives (a reused pid is not it).
    const uid = caller.process.readWhileAlive((pid) => podUidOfPid(pid, this.o.podCgroupParents));
    const pod = uid ? this.pods.get(uid) : undefined;
    if (!pod || pod.status?.phase === 'Succeeded' || pod.status?.phase === 'Failed') return undefined;
    return { namespace: pod.metadata!.namespace!, name: pod.metadata!.name!, uid: uid! };
  }

  async x509Svids(w: PodIdentity): Promise<X509SvidEntry[]> {
    const have = this.svids.get(w.uid);
    if (have && have.expiresAt > Date.now()) return [have.entry];
    let pending = this.inflight.get(w.uid);
    if (!pending) {
      pending = this.issue(w).finally(() => this.inflight.delete(w.uid));
      this.inflight.set(w.uid, pending);
    }
    return [(await pending).entry];
  }

  private async issue(w: PodIdentity): Promise<CachedSvid> {
    const { keyPkcs8Der, csrDer } = await newKeyAndCsr();
    const signed = await (await this.client()).signX509(w, csrDer);
    const renewal = this.svids.has(w.uid);
    const cached: CachedSvid = {
      entry: { spiffeId: signed.spiffe_id, certChainDer: signed.certificate, keyPkcs8Der, bundleDer: signed.bundle },
      expiresAt: signed.expires_at_unix_ms,
    };
    clearTimeout(this.svids.get(w.uid)?.timer);
    if (!this.pods.has(w.uid)) return cached; // the pod went away while this was being signed
    this.svids.set(w.uid, cached);
    if (renewal) this.stats.renewed++;
    else this.stats.issued++;
    // Renew at half-life; streams of this pod get the new SVID as soon as it is signed.
    cached.timer = setTimeout(() => void this.renew(w), Math.max(1000, (cached.expiresAt - Date.now()) / 2));
    cached.timer.unref();
    return cached;
  }

  private async renew(w: PodIdentity): Promise<void> {
    try {
      await this.issue(w);
      for (const l of this.podListeners.get(w.uid) ?? []) l();
    } catch (err) {
      this.o.log.warn({ pod: `${w.namespace}/${w.name}`, err: (err as Error).message }, 'SVID renewal failed, retrying in 5 s');
      const t = setTimeout(() => void this.renew(w), 5000);
      t.unref();
    }
  }

  x509Bundles(): ReadonlyMap<string, Buffer> {
    return new Map([...this.bundles].map(([td, b]) => [td, b.der]));
  }

  async jwtSvids(w: PodIdentity, audience: string[], spiffeId?: string): Promise<{ spiffeId: string; token: string }[]> {
    const signed = await (await this.client()).signJwt(w, audience);
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
    let set: Set<() => void> | undefined;
    if (w) {
      set = this.podListeners.get(w.uid) ?? new Set();
      this.podListeners.set(w.uid, set);
      set.add(listener);
    }
    return () => {
      this.bundleListeners.delete(listener);
      set?.delete(listener);
    };
  }

  status(): { endpoint?: string; pods: number; svids: number; bundles: string[] } & AgentIdentitySource['stats'] {
    return { endpoint: this.endpoint, pods: this.pods.size, svids: this.svids.size, bundles: [...this.bundles.keys()].sort(), ...this.stats };
  }

  async stop(): Promise<void> {
    for (const s of this.svids.values()) clearTimeout(s.timer);
    await this.watch?.cancel();
    await this.informer?.stop();
    this.nodeCa?.client.close();
  }
}
