// What tells peers this export is alive and complete: the heartbeat (rewritten every few seconds) and one
// synced marker per kind (with its count), all on one lease session so they vanish with this process —
// revoked on stop, expired after a crash — and are put again on the replacement when the lease is lost.
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
  heartbeatMs?: number;
  leaseTtlSeconds?: number;
}

export class ExportPresence {
  private readonly session: LeaseSession;
  private heartbeatTimer?: NodeJS.Timeout;

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
    this.heartbeatTimer = setInterval(() => this.beat(), this.o.heartbeatMs ?? 5_000);
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
    if (!lease) return; // between a loss and its replacement, which writes a fresh heartbeat
    void lease
      .put(keys.heartbeat(this.o.cluster))
      .value(encodeValue(Heartbeat, { cluster: this.o.cluster, at: new Date().toISOString() }))
      .exec()
      .then(() => this.o.health.ok())
      .catch((err: Error) => this.o.health.failed(err));
  }

  private async writeMarkers(lease: Lease): Promise<void> {
    const at = new Date().toISOString();
    await lease.put(keys.heartbeat(this.o.cluster)).value(encodeValue(Heartbeat, { cluster: this.o.cluster, at }));
    const counts = this.o.counts();
    for (const kind of EXPORT_KINDS) await lease.put(keys.synced(this.o.cluster, kind)).value(encodeValue(SyncedMarker, { at, count: counts[kind] }));
  }
}
