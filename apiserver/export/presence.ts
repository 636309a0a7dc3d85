// What tells peers this export is alive and complete: the heartbeat (rewritten every HEARTBEAT_MS) and one
// synced marker per kind (with its count), all on one lease session so they vanish with this process —
// revoked on stop, expired after a crash — and are put again on the replacement when the lease is lost.
//
// The period is short because peers judge this cluster stale after --remote-stale-after (default 2 s) without
// a new heartbeat: 500 ms leaves three beats of slack. Its cost is one ~80-byte put per 500 ms on this
// cluster's mesh etcd (a revision each, compacted away by mesh-maintenance.ts) and one watch event per
// connected peer's importer; this cluster's own agents watch only the services prefix and never see it, and
// importers do not copy it into their cache (sync/replicator.ts), so it wakes nothing else.
import type { Lease } from 'etcd3';
import type { EtcdRef } from '../../mesh/etcd.js';
import { LeaseSession } from '../../mesh/lease-session.js';
import { EXPORT_KINDS, keys, type ExportKind } from '../../mesh/schema/keys.js';
import { encodeValue, Heartbeat, SyncedMarker } from '../../mesh/schema/values.js';
import type { ExportLog } from './context.js';
import type { EtcdHealth } from './etcd-health.js';

interface ExportPresenceOptions {
  cluster: string;
  etcd: EtcdRef;
  /** What each synced marker counts, read whenever the markers are (re)written. */
  counts: () => Record<ExportKind, number>;
  health: EtcdHealth;
  log: ExportLog;
  /** Default HEARTBEAT_MS. */
  heartbeatMs?: number;
  leaseTtlSeconds?: number;
}

/** How often the heartbeat is rewritten: well inside the peers' default --remote-stale-after of 2 s. */
const HEARTBEAT_MS = 500;

export class ExportPresence {
  private readonly session: LeaseSession;
  private heartbeatTimer?: NodeJS.Timeout;
  /** A put still in flight: a slow etcd gets one beat at a time, not a pile of them. */
  private beating = false;

  constructor(private readonly o: ExportPresenceOptions) {
    this.session = new LeaseSession({
      etcd: o.etcd,
      ttlSeconds: o.leaseTtlSeconds ?? 15,
      onNewLease: (lease) => this.writeMarkers(lease),
      onLost: (err) => {
        o.log.warn({ err: err?.message }, 'mesh etcd lease lost, granting a new one');
        o.health.note(err);
      },
      onRetry: (err, attempt) => {
        o.log.warn({ err: err.message, attempt }, 'putting the heartbeat and synced markers on a new lease failed, retrying');
        o.health.failed(err);
      },
    });
  }

  /** Call once the initial export is in etcd: the synced markers say so. Rejects if the first lease fails. */
  async start(): Promise<void> {
    await this.session.open();
    this.heartbeatTimer = setInterval(() => this.beat(), this.o.heartbeatMs ?? HEARTBEAT_MS);
    this.heartbeatTimer.unref();
  }

  /** After the etcd client was replaced (identity renewal): heartbeat and markers move to a lease there. */
  move(): Promise<void> {
    return this.session.move();
  }

  /** Revoking the lease removes heartbeat and markers at once: peers see us gone, not stale. */
  async stop(): Promise<void> {
    if (this.heartbeatTimer) clearInterval(this.heartbeatTimer);
    await this.session.close();
  }

  private beat(): void {
    const lease = this.session.lease;
    if (!lease || this.beating) return; // between a loss and its replacement, which writes a fresh heartbeat
    this.beating = true;
    void lease
      .put(keys.heartbeat(this.o.cluster))
      .value(encodeValue(Heartbeat, { cluster: this.o.cluster, at: new Date().toISOString() }))
      .exec()
      .then(() => this.o.health.ok())
      .catch((err: Error) => this.o.health.failed(err))
      .finally(() => (this.beating = false));
  }

  private async writeMarkers(lease: Lease): Promise<void> {
    const at = new Date().toISOString();
    await lease.put(keys.heartbeat(this.o.cluster)).value(encodeValue(Heartbeat, { cluster: this.o.cluster, at }));
    const counts = this.o.counts();
    for (const kind of EXPORT_KINDS) await lease.put(keys.synced(this.o.cluster, kind)).value(encodeValue(SyncedMarker, { at, count: counts[kind] }));
  }
}
