// Follows the link Secrets `skein connect` writes: one RemoteSync per remote (started, replaced when its
// Secret changes, stopped with its cache removed when the Secret goes), and etcd users for the peers allowed
// to read our export. No restart is needed for a connect or a disconnect.
import type { KubeConfig, V1Secret } from '@kubernetes/client-node';
import type { EtcdRef } from '../apiserver/mesh-etcd.js';
import { startInformer, type RunningInformer } from '../apiserver/kube/informer.js';
import type { KubeRest } from '../apiserver/kube/rest.js';
import { syncPeerUsers } from '../apiserver/mesh-auth.js';
import { SKEIN_NAMESPACE } from '../apiserver/service-ref.js';
import { publishBundle, pruneBundles, removeBundle } from './bundles.js';
import { PEER_LABEL, PeerSecret, REMOTE_LABEL, RemoteSecret } from './secrets.js';
import { decodeSecretData, type KubeSecrets } from '../apiserver/kube/secrets.js';
import type { CredentialIssuer } from './credentials.js';
import { RemoteSync, type RemoteStatus } from './remote-sync.js';
import { remoteSecretName } from './secrets.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };


export class SyncManager {
  private readonly remotes = new Map<string, { sync: RemoteSync; fingerprint: string; trustDomain: string }>();
  private readonly peers = new Map<string, string>();
  private informers: RunningInformer<V1Secret>[] = [];
  private chain: Promise<unknown> = Promise.resolve();

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
      /** This cluster's own trust domain: its bundle is never pruned. */
      ownTrustDomain?: string;
      staleAfterMs?: number;
      removeAfterMs?: number;
    },
  ) {}

  /** Serializes all changes: a Secret updated twice quickly never runs two syncs for one remote. */
  private enqueue(fn: () => Promise<void>): void {
    this.chain = this.chain.then(fn).catch((err: Error) => this.o.log.warn({ err: err.message }, 'sync manager change failed'));
  }

  start(): void {
    const path = `/api/v1/namespaces/${SKEIN_NAMESPACE}/secrets`;
    const watch = (label: string, onEvent: (type: string, s: V1Secret) => void) =>
      startInformer<V1Secret>({
        kc: this.o.kc,
        path,
        labelSelector: label,
        list: () => this.o.rest.get(`${path}?labelSelector=${encodeURIComponent(label)}`),
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

  private async onRemote(type: string, secret: V1Secret): Promise<void> {
    const name = secret.metadata?.labels?.[REMOTE_LABEL] ?? '';
    const existing = this.remotes.get(name);
    if (type === 'delete') {
      this.remotes.delete(name);
      await existing?.sync.stop(true);
      if (existing) await removeBundle(this.o.local(), this.o.localCluster, existing.trustDomain);
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
    // A renewed identity alone (tls.*) is adopted by the running sync; anything else restarts it.
    const fingerprint = [r.endpoint, r['ca.crt'], r['trust-domain']].join('|');
    if (existing?.fingerprint === fingerprint) {
      await existing.sync.adopt({ certPem: r['tls.crt'], keyPem: r['tls.key'] });
      return;
    }
    // Only a new or changed CA is a new bundle: a renewal alone must not wake every agent.
    if (existing && existing.trustDomain !== r['trust-domain']) await removeBundle(this.o.local(), this.o.localCluster, existing.trustDomain);
    await publishBundle(this.o.local(), this.o.localCluster, { trustDomain: r['trust-domain'], caPem: r['ca.crt'], own: false });
    await existing?.sync.stop(false);
    const sync = new RemoteSync({
      local: this.o.local,
      localCluster: this.o.localCluster,
      remote: { name: r.cluster, id: Number(r.id), endpoint: r.endpoint, caPem: r['ca.crt'], certPem: r['tls.crt'], keyPem: r['tls.key'] },
      onCredentials: (cred) =>
        this.enqueue(async () => {
          await this.o.secrets.put(remoteSecretName(r.cluster), { ...r, 'tls.crt': cred.certPem, 'tls.key': cred.keyPem }, { [REMOTE_LABEL]: r.cluster });
        }),
      log: this.o.log,
      staleAfterMs: this.o.staleAfterMs,
      removeAfterMs: this.o.removeAfterMs,
    });
    this.remotes.set(r.cluster, { sync, fingerprint, trustDomain: r['trust-domain'] });
    await sync.start();
    this.o.log.info({ remote: r.cluster, endpoint: r.endpoint }, existing ? 'remote credentials changed: sync restarted' : 'connected: syncing remote');
  }

  private async onPeer(type: string, secret: V1Secret): Promise<void> {
    const parsed = PeerSecret.safeParse(decodeSecretData(secret.data));
    const name = secret.metadata!.name!;
    if (type === 'delete') this.peers.delete(name);
    else if (parsed.success) this.peers.set(name, parsed.data.cluster);
    await this.reconcilePeers();
  }

  private async reconcilePeers(): Promise<void> {
    const peers = [...new Set(this.peers.values())];
    await syncPeerUsers(this.o.local(), this.o.localCluster, peers);
    await this.o.issuer?.setPeers(peers);
  }

  status(): RemoteStatus[] {
    return [...this.remotes.values()].map((r) => r.sync.status()).sort((a, b) => a.cluster.localeCompare(b.cluster));
  }

  async stop(): Promise<void> {
    await Promise.all(this.informers.map((i) => i.stop()));
    await Promise.all([...this.remotes.values()].map((r) => r.sync.stop(false)));
  }
}
