// Where the remotes' sync status keys (`sync/<remote>/status`, what agents act on) are written: all on one
// lease session of this process (mesh/lease-session.ts), so they vanish with it — revoked on stop, expired
// after a crash — and agents read a remote whose importer is dead as stale, not as fresh. After a lost lease
// every status is put again on the replacement; on identity renewal the session moves to the new client.
import type { Lease } from 'etcd3';
import type { EtcdRef } from '../mesh/etcd.js';
import { LeaseSession } from '../mesh/lease-session.js';
import { keys } from '../mesh/schema/keys.js';

/** What PeerHealth publishes its status through. */
export interface SyncStatusStore {
  /** Puts the remote's status (encoded SyncStatus); rejects when it did not land (the caller retries). */
  put(remote: string, value: string): Promise<void>;
  /** Deletes the remote's status (disconnect). */
  remove(remote: string): Promise<void>;
}

type Log = { warn: (o: object, m: string) => void };

export class LeasedSyncStatus implements SyncStatusStore {
  /** The latest status of every remote: what a new lease must carry. */
  private readonly values = new Map<string, string>();
  private readonly session: LeaseSession;
  private opened = false;
  private opening?: Promise<void>;
  /** What the latest lease was given by putAll, so a put right after it is not written twice. */
  private carried?: { lease: Lease; values: Map<string, string> };

  constructor(
    private readonly o: { etcd: EtcdRef; log: Log; ttlSeconds?: number; retryMs?: number },
  ) {
    this.session = new LeaseSession({
      etcd: o.etcd,
      // As the export's heartbeat lease: a dead importer reads as stale within 15 s. (A silent peer is flagged
      // far sooner, --remote-stale-after, default 2 s: that is this live process's judgment, published at once.)
      ttlSeconds: o.ttlSeconds ?? 15,
      retryMs: o.retryMs,
      onNewLease: (lease) => this.putAll(lease),
      onLost: (err) => o.log.warn({ err: err.message }, 'sync status lease lost, granting a new one'),
      onRetry: (err, attempt) => o.log.warn({ err: err.message, attempt }, 'putting the sync status on a new lease failed, retrying'),
    });
  }

  async put(remote: string, value: string): Promise<void> {
    this.values.set(remote, value);
    if (!this.opened) await this.open(); // the first lease: granted once, carrying every value set so far
    const lease = this.session.lease;
    // Between a loss and its replacement: the replacement puts every value, this one included.
    if (!lease) throw new Error('sync status lease lost; a new one is being granted');
    if (this.carried?.lease === lease && this.carried.values.get(remote) === value) return;
    // What the lease carried is no longer what etcd holds once this is written: a later put of the carried
    // value (fresh → stale → fresh) must be written, not skipped.
    this.carried?.values.delete(remote);
    await lease.put(keys.syncStatus(remote)).value(value);
  }

  async remove(remote: string): Promise<void> {
    this.values.delete(remote);
    await this.o.etcd().delete().key(keys.syncStatus(remote));
  }

  /** After the etcd client was replaced (identity renewal): the statuses move to a lease there. */
  move(): Promise<void> {
    return this.opened ? this.session.move() : Promise.resolve();
  }

  /** Revokes the lease: every remote's status is gone at once, and agents read those remotes as stale. */
  close(): Promise<void> {
    return this.session.close();
  }

  private open(): Promise<void> {
    this.opening ??= this.session
      .open()
      .then(() => void (this.opened = true))
      .finally(() => (this.opening = undefined));
    return this.opening;
  }

  private async putAll(lease: Lease): Promise<void> {
    // One at a time until the lease has every latest value (one that changes meanwhile is put again), and
    // only what is still wanted: a remote removed meanwhile is not put back.
    const values = new Map<string, string>();
    for (;;) {
      const next = [...this.values].find(([remote, value]) => values.get(remote) !== value);
      if (!next) break;
      await lease.put(keys.syncStatus(next[0])).value(next[1]);
      values.set(next[0], next[1]);
    }
    this.carried = { lease, values };
  }
}
