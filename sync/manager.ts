// Follows the link Secrets `skein connect` writes: one RemoteSync per remote (started, replaced when its
// Secret changes, stopped with its cache removed when the Secret goes), and etcd users for the peers allowed
// to read our export. No restart is needed for a connect or a disconnect.
import type { KubeConfig } from '@kubernetes/client-node';
import { retryUntilDone } from '../mesh/backoff.js';
import { EtcdKv, type EtcdRef } from '../mesh/etcd.js';
import { startInformer, type RunningInformer } from '../mesh/kube/informer.js';
import type { KubeRest } from '../mesh/kube/rest.js';
import { SKEIN_NAMESPACE } from '../mesh/service-ref.js';
import { BundleOwnershipError, publishBundle, pruneBundles, removeBundle } from '../mesh/trust-bundles.js';
import { PEER_LABEL, PeerSecret, REMOTE_LABEL, RemoteSecret } from '../mesh/link-secrets.js';
import { trustDomainOf } from '../mtls/cluster-ca.js';
import { checkBundle } from '../mtls/trust-bundle.js';
import { decodeSecretData, type KubeSecrets } from '../mesh/kube/secrets.js';
import type { CredentialIssuer } from './credential-issuer.js';
import type { RemoteStatus } from '../mesh/status.js';
import { RemoteSync } from './remote-sync.js';
import { LeasedSyncStatus } from './sync-status.js';
import { LocalNetworks, parsePin, type RejectReason, type RemoteQuota } from '../mesh/address-policy.js';
import { keys, parseExportKey } from '../mesh/schema/keys.js';
import { decodeValue } from '../mesh/schema/values.js';
import { remoteSecretName } from '../mesh/link-secrets.js';
import type { Secret } from '../mesh/kube/objects.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

export class SyncManager {
  /** Per remote: its sync, what restarts it, its trust domain and the bundle published for it now. */
  private readonly remotes = new Map<string, { sync: RemoteSync; fingerprint: string; trustDomain: string; bundlePem: string }>();
  private readonly peers = new Map<string, string>();
  private readonly refused = new Map<string, string>();
  private stopped = false;
  private informers: RunningInformer<Secret>[] = [];
  private chain: Promise<unknown> = Promise.resolve();
  /** Every remote's sync status, on one lease of this process: it expires with a dead importer. */
  private readonly syncStatus: LeasedSyncStatus;

  constructor(
    private readonly o: {
      kc: KubeConfig;
      rest: KubeRest;
      secrets: KubeSecrets;
      local: EtcdRef;
      localCluster: string;
      log: Log;
      /** Renews peers' identities signed by our CA (absent without a CA). */
      issuer?: CredentialIssuer;
      /** Makes the peers allowed to read our export exactly `peers` (their etcd users). */
      authorizePeers: (peers: string[]) => Promise<void>;
      /** This cluster's own trust domain: its bundle is never pruned. */
      ownTrustDomain?: string;
      staleAfterMs?: number;
      removeAfterMs?: number;
      /** This cluster's Service CIDR: no peer may claim addresses in it (its pod CIDRs come from its export config). */
      serviceCidr?: string;
      /** Called once per remote key rejected (metrics). */
      onRemoteRejected?: (remote: string, reason: RejectReason) => void;
      /** What each peer may keep cached (default REMOTE_QUOTA, mesh/address-policy.ts). */
      remoteQuota?: Partial<RemoteQuota>;
    },
  ) {
    this.syncStatus = new LeasedSyncStatus({ etcd: o.local, log: o.log });
  }

  /** Serializes all changes: a Secret updated twice quickly never runs two syncs for one remote. */
  private enqueue(fn: () => Promise<void>): void {
    this.chain = this.chain.then(() => this.retrying(fn));
  }

  /**
   * Runs one change until it succeeds: every step is idempotent, and one transient etcd or Kubernetes error
   * (an auth-revision race, an unreachable API) must not leave a link half made until the next restart.
   * A refusal on trust grounds is final and only logged.
   */
  private async retrying(fn: () => Promise<void>): Promise<void> {
    try {
      await retryUntilDone('sync manager change', fn, this.o.log, { stopped: () => this.stopped, isFinal: (err) => err instanceof BundleOwnershipError });
    } catch (err) {
      this.o.log.warn({ err: (err as Error).message }, 'refused a trust bundle');
    }
  }

  private networks?: LocalNetworks;
  private networksTimer?: NodeJS.Timeout;
  private refreshingNetworks = false;

  /** This cluster's own networks, shared by every remote's policy. */
  private get localNetworks(): LocalNetworks {
    return (this.networks ??= new LocalNetworks(this.o.localCluster, this.o.serviceCidr));
  }

  /**
   * Reads this cluster's pod CIDRs from its own export config (one key, polled: it changes only as nodes
   * join); when they change, every remote's cache is checked again against them.
   */
  private async refreshLocalNetworks(): Promise<void> {
    if (this.refreshingNetworks) return;
    this.refreshingNetworks = true;
    try {
      const key = keys.config(this.o.localCluster);
      const raw = await this.o.local().get(key).string();
      const decoded = raw === null ? undefined : decodeValue(parseExportKey(key)!, raw);
      if (!decoded?.ok || decoded.kind !== 'config' || !this.localNetworks.setPodCidrs(decoded.value.podCidrs)) return;
      this.o.log.info({ podCidrs: this.localNetworks.podCidrs }, "this cluster's pod CIDRs changed: checking every remote's cache against them");
      for (const r of this.remotes.values()) r.sync.revalidate();
    } catch {
      /* the local etcd is unreachable: the next tick retries */
    } finally {
      this.refreshingNetworks = false;
    }
  }

  start(): void {
    // Before any remote starts (the chain runs in order), so the first relist already knows them.
    this.enqueue(() => this.refreshLocalNetworks());
    this.networksTimer = setInterval(() => void this.refreshLocalNetworks(), 2_000);
    this.networksTimer.unref();
    const path = `/api/v1/namespaces/${SKEIN_NAMESPACE}/secrets`;
    const watch = (label: string, onEvent: (type: string, s: Secret) => void) =>
      startInformer<Secret>({
        kc: this.o.kc,
        path,
        labelSelector: label,
        list: () => this.o.rest.list(`${path}?labelSelector=${encodeURIComponent(label)}`),
        onEvent,
        onRestart: (err) => this.o.log.warn({ err: (err as Error)?.message }, 'secret watch restarting'),
      });
    this.informers = [
      watch(REMOTE_LABEL, (type, s) => this.enqueue(() => this.onRemote(type, s))),
      watch(PEER_LABEL, (type, s) => this.enqueue(() => this.onPeer(type, s))),
    ];
    // Once every peer Secret is known, drop etcd users of peers disconnected while this process was down
    // (a peer event alone would never come when none is left).
    void this.informers[1]!.synced.then(() => this.enqueue(() => this.reconcilePeers()));
    // Once every remote Secret is known, drop bundles of peers disconnected while this process was down.
    void this.informers[0]!.synced.then(() =>
      this.enqueue(async () => {
        const keep = new Set([...this.remotes.values()].map((r) => r.trustDomain));
        if (this.o.ownTrustDomain) keep.add(this.o.ownTrustDomain);
        const gone = await pruneBundles(this.o.local(), this.o.localCluster, keep);
        if (gone.length) this.o.log.info({ trustDomains: gone }, 'removed trust bundles of disconnected clusters');
      }),
    );
  }

  private async onRemote(type: string, secret: Secret): Promise<void> {
    const name = secret.metadata?.labels?.[REMOTE_LABEL] ?? '';
    const existing = this.remotes.get(name);
    if (type === 'delete') {
      // Forgotten only once all is undone: a retry after a failed step finds it still here.
      await existing?.sync.stop(true);
      if (existing) await removeBundle(this.o.local(), this.o.localCluster, existing.trustDomain, name);
      this.remotes.delete(name);
      this.refused.delete(name);
      this.o.log.info({ remote: name }, 'disconnected: remote cache removed');
      return;
    }
    const parsed = RemoteSecret.safeParse(decodeSecretData(secret.data));
    if (!parsed.success) {
      const i = parsed.error.issues[0];
      this.o.log.warn({ secret: secret.metadata?.name, field: i?.path.join('.'), err: i?.message }, 'ignoring a malformed remote Secret: run skein connect again');
      return;
    }
    const r = parsed.data;
    if (r.cluster === this.o.localCluster) {
      this.o.log.warn({ secret: secret.metadata?.name }, 'ignoring a remote Secret that names this cluster itself');
      return;
    }
    const untrusted = this.checkPeerTrust(r);
    if (untrusted) {
      // A running link keeps its last good bundle and CA: a bad update changes nothing.
      this.refused.set(r.cluster, untrusted);
      this.o.log.warn({ remote: r.cluster, secret: secret.metadata?.name, err: untrusted }, 'refusing a link update: it claims a trust domain it may not');
      return;
    }
    this.refused.delete(r.cluster);
    // A renewed identity alone (tls.*) is adopted by the running sync, a new bundle alone is published;
    // anything else restarts it. The pin (pod CIDRs, cluster ID) is part of it: a re-pin by skein connect
    // restarts the sync under it.
    const fingerprint = [r.endpoint, r['ca.crt'], r['trust-domain'], r.id, r['pod-cidrs']].join('|');
    if (existing?.fingerprint === fingerprint) {
      await existing.sync.adopt({ certPem: r['tls.crt'], keyPem: r['tls.key'] });
      if (existing.bundlePem !== r['bundle.crt']) await this.publishPeerBundle(r.cluster, r['bundle.crt']);
      return;
    }
    // Only a new or changed CA is a new bundle: a renewal alone must not wake every agent.
    if (existing && existing.trustDomain !== r['trust-domain']) await removeBundle(this.o.local(), this.o.localCluster, existing.trustDomain, r.cluster);
    await publishBundle(this.o.local(), this.o.localCluster, { trustDomain: r['trust-domain'], caPem: r['bundle.crt'], cluster: r.cluster, own: false });
    await existing?.sync.stop(false);
    const sync = new RemoteSync({
      local: new EtcdKv(this.o.local),
      status: this.syncStatus,
      localCluster: this.o.localCluster,
      remote: { name: r.cluster, id: Number(r.id), endpoint: r.endpoint, caPem: r['ca.crt'], certPem: r['tls.crt'], keyPem: r['tls.key'], podCidrs: parsePin(r['pod-cidrs']) },
      localNetworks: this.localNetworks,
      onRejected: (reason) => this.o.onRemoteRejected?.(r.cluster, reason),
      quota: this.o.remoteQuota,
      onCredentials: (cred) => this.enqueue(() => this.updateLink(r.cluster, { 'tls.crt': cred.certPem, 'tls.key': cred.keyPem })),
      // The peer's own bundle as it exports it (the judge checked its trust domain and every CA): how its CA
      // rotation reaches us. Kept in the link too, so a restart starts from it, not from connect's.
      onBundle: (caPem) =>
        this.enqueue(async () => {
          if (this.remotes.get(r.cluster)?.sync !== sync || this.remotes.get(r.cluster)?.bundlePem === caPem) return;
          await this.publishPeerBundle(r.cluster, caPem);
          await this.updateLink(r.cluster, { 'bundle.crt': caPem });
        }),
      log: this.o.log,
      staleAfterMs: this.o.staleAfterMs,
      removeAfterMs: this.o.removeAfterMs,
    });
    this.remotes.set(r.cluster, { sync, fingerprint, trustDomain: r['trust-domain'], bundlePem: r['bundle.crt'] });
    try {
      await sync.start();
    } catch (err) {
      // Not left registered half-started: the retry must start it, not mistake it for a running one.
      this.remotes.delete(r.cluster);
      await sync.stop(false).catch(() => {});
      throw err;
    }
    this.o.log.info({ remote: r.cluster, endpoint: r.endpoint }, existing ? 'remote credentials changed: sync restarted' : 'connected: syncing remote');
  }

  /** Publishes a connected peer's bundle for our agents (its trust domain's key, owned by that peer). */
  private async publishPeerBundle(cluster: string, caPem: string): Promise<void> {
    const entry = this.remotes.get(cluster);
    if (!entry) return;
    const b = checkBundle(caPem, entry.trustDomain);
    if (!b.ok) {
      this.o.log.warn({ remote: cluster, err: b.error }, 'refusing a trust bundle; keeping the last good one');
      return;
    }
    if (await publishBundle(this.o.local(), this.o.localCluster, { trustDomain: entry.trustDomain, caPem, cluster, own: false })) {
      this.o.log.info({ remote: cluster, trustDomain: entry.trustDomain, cas: b.certs.map((c) => c.serialNumber) }, 'trust bundle of a connected cluster changed');
    }
    entry.bundlePem = caPem;
  }

  /** Rewrites fields of a link Secret as it is now (another field may have changed since the sync started). */
  private async updateLink(cluster: string, fields: Record<string, string>): Promise<void> {
    const name = remoteSecretName(cluster);
    const current = await this.o.secrets.get(name);
    if (!current) return; // disconnected meanwhile
    await this.o.secrets.put(name, { ...current, ...fields }, { [REMOTE_LABEL]: cluster });
  }

  /**
   * Why a link may not be trusted, or undefined. A peer's trust domain is its own (`<cluster>.skein`), never
   * this cluster's or another connected peer's, and its bundle holds CAs of exactly that trust domain.
   */
  private checkPeerTrust(r: RemoteSecret): string | undefined {
    const td = r['trust-domain'];
    if (td === (this.o.ownTrustDomain ?? trustDomainOf(this.o.localCluster))) return `the link to ${r.cluster} claims trust domain ${td}, which is this cluster's own`;
    for (const [cluster, other] of this.remotes) {
      if (cluster !== r.cluster && other.trustDomain === td) return `the link to ${r.cluster} claims trust domain ${td}, which belongs to connected cluster ${cluster}`;
    }
    if (td !== trustDomainOf(r.cluster)) return `the link to ${r.cluster} claims trust domain ${td}; cluster ${r.cluster}'s trust domain is ${trustDomainOf(r.cluster)}`;
    const ca = checkBundle(r['bundle.crt'], td);
    return ca.ok ? undefined : `the trust bundle of ${r.cluster}: ${ca.error}`;
  }

  /** Links refused for trust reasons (cluster → why), for status. */
  refusedLinks(): { cluster: string; reason: string }[] {
    return [...this.refused].map(([cluster, reason]) => ({ cluster, reason })).sort((a, b) => a.cluster.localeCompare(b.cluster));
  }

  private async onPeer(type: string, secret: Secret): Promise<void> {
    const parsed = PeerSecret.safeParse(decodeSecretData(secret.data));
    const name = secret.metadata!.name!;
    if (type === 'delete') this.peers.delete(name);
    else if (parsed.success) this.peers.set(name, parsed.data.cluster);
    await this.reconcilePeers();
  }

  private async reconcilePeers(): Promise<void> {
    const peers = [...new Set(this.peers.values())];
    await this.o.authorizePeers(peers);
    await this.o.issuer?.setPeers(peers);
  }

  status(): RemoteStatus[] {
    return [...this.remotes.values()].map((r) => r.sync.status()).sort((a, b) => a.cluster.localeCompare(b.cluster));
  }

  /** After the local etcd client was replaced (identity renewal): the sync statuses move to a lease there. */
  moveLease(): Promise<void> {
    return this.syncStatus.move();
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.networksTimer) clearInterval(this.networksTimer);
    await Promise.all(this.informers.map((i) => i.stop()));
    await Promise.all([...this.remotes.values()].map((r) => r.sync.stop(false)));
    // Nobody keeps the caches current any more: agents must read them as stale, not fresh.
    await this.syncStatus.close();
  }
}
