// Replicates one remote cluster's export into the local mesh etcd's cache prefix, composed of:
//   peer-connection.ts  the connection to the peer's mesh etcd: connect, retry with backoff, relist when a
//                       watch ends, switch to renewed identities without a relist
//   replicator.ts       what runs over it: list at a revision, watch from revision + 1, relist-and-diff,
//                       each key judged (peer-judge.ts: schema + PeerPolicy) before it reaches the cache
//   peer-health.ts      the stale flag, counts, the sync status agents act on, removal after the grace
// and shows them as one RemoteStatus.
import type { Credential } from '../mesh/credentials.js';
import { LocalNetworks, PeerPolicy, REMOTE_QUOTA, type RejectReason, type RemoteQuota } from '../mesh/address-policy.js';
import { cachePrefix } from '../mesh/schema/keys.js';
import type { RemoteStatus } from '../mesh/status.js';
import { StateWriter, type KvBackend } from '../mesh/state-writer.js';
import { connectPeer } from './etcd-peer-source.js';
import { PeerConnection, type RemoteSpec } from './peer-connection.js';
import { PeerHealth } from './peer-health.js';
import { peerJudge } from './peer-judge.js';
import type { PeerSource } from './peer-source.js';
import { Replicator } from './replicator.js';
import type { SyncStatusStore } from './sync-status.js';

export interface RemoteSyncOptions {
  /** The local mesh etcd (the cache goes there). */
  local: KvBackend;
  /** Where the sync status agents act on goes (one lease for every remote of this process: sync-status.ts). */
  status: SyncStatusStore;
  localCluster: string;
  remote: RemoteSpec;
  /** Called after switching to a renewed identity, so it can be stored for the next start. */
  onCredentials?: (cred: Credential) => void;
  log: { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };
  /** A remote whose heartbeat has not advanced for this long is stale (kept, flagged). */
  staleAfterMs?: number;
  /** A remote stale for this long has its cached state removed (0: never). */
  removeAfterMs?: number;
  /** This cluster's own pod and Service CIDRs, which no peer may claim (default: none known). */
  localNetworks?: LocalNetworks;
  /** Called once per rejected key (for metrics). */
  onRejected?: (reason: RejectReason) => void;
  /** The peer's own trust bundle (PEM), accepted by the judge, at every relist and every change. */
  onBundle?: (caPem: string) => void;
  /** What the peer may keep cached (default REMOTE_QUOTA, mesh/address-policy.ts). */
  quota?: Partial<RemoteQuota>;
  /** Coalesces the relists that admit keys refused for the quota once space frees (default 10 s). */
  quotaRelistDelayMs?: number;
  /** Reaches the peer's mesh etcd (default: etcd3 over mTLS; tests pass an in-memory peer). */
  connect?: (remote: RemoteSpec) => PeerSource;
  /** The local clock (default Date.now). */
  now?: () => number;
}

export class RemoteSync {
  private readonly cache: StateWriter;
  private readonly replicator: Replicator;
  private readonly connection: PeerConnection;
  private readonly health: PeerHealth;
  private advertisedBeyondPin?: string[];
  private lastError?: string;

  constructor(private readonly o: RemoteSyncOptions) {
    const remote = o.remote.name;
    const policy = new PeerPolicy(o.remote, o.localNetworks ?? new LocalNetworks(o.localCluster));
    const quota = { ...REMOTE_QUOTA, ...o.quota };
    this.cache = new StateWriter(
      o.local,
      {
        onError: (err) => (this.lastError = `local etcd: ${(err as Error).message}`),
        // The replicator refuses larger values first; this is the local etcd refusing one on its own.
        onRefused: (key, _bytes, _limit, why) => this.replicator.refusedLocally(key, why),
      },
      { maxValueBytes: quota.maxValueBytes },
    );
    this.replicator = new Replicator({
      remote,
      cache: this.cache,
      judge: peerJudge(remote, policy),
      log: o.log,
      onRejected: o.onRejected,
      onAccepted: (decoded) => {
        if (decoded.kind === 'heartbeat') this.health.heartbeat(decoded.value.at);
        if (decoded.kind === 'config') this.advertisedBeyondPin = policy.beyondPin(decoded.value);
        if (decoded.kind === 'bundle') o.onBundle?.(decoded.value.caPem);
      },
      onRecovered: () => (this.lastError = undefined),
      onSynced: () => this.health.publish(),
      quota,
      relist: () => this.connection.relist(),
      quotaRelistDelayMs: o.quotaRelistDelayMs,
    });
    this.health = new PeerHealth({
      remote,
      cache: this.cache,
      status: o.status,
      replication: this.replicator,
      log: o.log,
      staleAfterMs: o.staleAfterMs,
      removeAfterMs: o.removeAfterMs,
      onRevived: () => this.connection.relist(),
      now: o.now,
    });
    this.connection = new PeerConnection({
      remote: o.remote,
      localCluster: o.localCluster,
      replication: this.replicator,
      connect: o.connect ?? connectPeer,
      log: o.log,
      onError: (message) => (this.lastError = message),
      onCredentials: o.onCredentials,
    });
  }

  get spec(): RemoteSpec {
    return this.connection.spec;
  }

  async start(): Promise<void> {
    const cachePfx = cachePrefix(this.o.remote.name);
    await this.cache.load([cachePfx]);
    this.replicator.dropRefusedCache(await this.o.local.list(cachePfx).catch(() => new Map<string, string>()));
    this.connection.start();
    this.health.start();
  }

  /** Switches to a renewed identity: new client, watch resumed from the last applied revision, no relist. */
  adopt(raw: string | Credential): Promise<void> {
    return this.connection.adopt(raw);
  }

  /** Drops cached keys that fail now (call after this cluster's own networks changed). */
  revalidate(): void {
    this.replicator.revalidate();
  }

  status(): RemoteStatus {
    const spec = this.connection.spec;
    const r = this.replicator;
    return {
      cluster: spec.name,
      id: spec.id,
      endpoint: spec.endpoint,
      connected: r.connected,
      synced: r.synced,
      stale: this.health.stale,
      lastHeartbeat: this.health.lastHeartbeat,
      revision: r.revision,
      revisionLag: r.revisionLag,
      ...this.health.counts(),
      rejected: r.rejected,
      rejectedByReason: { ...r.rejectedByReason },
      quota: r.quotaUsage,
      pinnedPodCidrs: spec.podCidrs,
      advertisedBeyondPin: this.advertisedBeyondPin?.length ? this.advertisedBeyondPin : undefined,
      relists: r.relists,
      rotations: this.connection.rotations,
      identityExpires: this.connection.identityExpires,
      lastError: this.lastError,
    };
  }

  /** Stops replicating; with `removeCache` (disconnect) the remote's cached state is deleted too. */
  async stop(removeCache: boolean): Promise<void> {
    this.health.stop();
    this.replicator.stop();
    await this.connection.stop();
    if (!removeCache) return;
    this.cache.resume();
    this.cache.replaceUnder(cachePrefix(this.o.remote.name), new Map());
    await this.cache.idle();
    await this.health.unpublish();
  }
}
