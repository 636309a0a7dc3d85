// One peer's health as this cluster sees it: the stale flag, how much of it is cached, the sync status the
// node agents act on, and removal of its cached state once it stayed stale past the grace.
//
// Staleness is judged on the local clock alone: a heartbeat counts when its value advances, timed by when it
// arrived. The peer's own timestamp only tells one heartbeat from the next, so a peer whose clock is skewed
// is neither stale forever (clock behind) nor fresh long after it stopped (clock ahead).
//
// Promptly: a timer is armed for the exact moment the peer turns stale (its latest heartbeat's arrival +
// staleAfterMs, moved on lazily when it fires early because a newer heartbeat came), and publishes then; the
// first heartbeat after a published stale publishes fresh at once. Nothing else changes: the watch simply
// continues (no relist), so the peer's backends return to the agents' active sets with that one status write.
// The 2 s tick only retries a failed write, follows connected/synced, and removes the cache after the grace.
import { cachePrefix, EXPORT_KINDS, type ExportKind } from '../mesh/schema/keys.js';
import { encodeValue, SyncStatus } from '../mesh/schema/values.js';
import type { StateWriter } from '../mesh/state-writer.js';
import type { SyncStatusStore } from './sync-status.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

export interface PeerHealthOptions {
  remote: string;
  /** The local cache of the peer's export (counted; emptied after the grace). */
  cache: StateWriter;
  /** Where the sync status goes: the local mesh etcd, on this process's lease (sync-status.ts). */
  status: SyncStatusStore;
  /** The replication's state: a peer is judged stale only once it synced. */
  replication: { readonly connected: boolean; readonly synced: boolean };
  log: Log;
  /** A peer whose heartbeat has not advanced for this long is stale (kept, flagged). Default STALE_AFTER_MS. */
  staleAfterMs?: number;
  /** A peer stale for this long has its cached state removed (0, the default: never). */
  removeAfterMs?: number;
  /** A heartbeat advanced after the cached state was removed: the cache must be relisted. */
  onRevived?: () => void;
  now?: () => number;
}

/** --remote-stale-after's default: four heartbeats (apiserver/export/presence.ts: every 500 ms) missed. */
const STALE_AFTER_MS = 2_000;

export class PeerHealth {
  /** The peer's timestamp of its latest heartbeat, and when (local clock) it arrived. */
  private heartbeatAt?: string;
  private heardAt?: number;
  private removed = false;
  private published = '';
  /** Whether `published` says stale. */
  private publishedStale = false;
  /** The publish in progress: callers meanwhile share it (it writes until the status is current). */
  private publishing?: Promise<void>;
  private timer?: NodeJS.Timeout;
  /** Fires when the peer turns stale unless a newer heartbeat came (then it is armed again for that one). */
  private staleTimer?: NodeJS.Timeout;
  private started = false;
  private readonly cachePfx: string;
  private readonly now: () => number;

  constructor(private readonly o: PeerHealthOptions) {
    this.cachePfx = cachePrefix(o.remote);
    this.now = o.now ?? Date.now;
  }

  /** An accepted heartbeat value's timestamp; the same one again (a relist re-reading it) is no news. */
  heartbeat(at: string): void {
    if (at === this.heartbeatAt) return;
    this.heartbeatAt = at;
    this.heardAt = this.now();
    this.armStaleTimer();
    // Back from stale: the agents take its backends again now, not at the next tick.
    if (this.publishedStale) void this.publish();
    if (this.removed) {
      this.removed = false;
      // The watch brings changes only: what was removed while the peer was silent comes back with a relist.
      this.o.log.info({ remote: this.o.remote }, 'remote heartbeat is back after its cached state was removed: relisting');
      this.o.onRevived?.();
    }
  }

  get stale(): boolean {
    return this.o.replication.synced && (this.heardAt === undefined || this.silentMs > this.staleAfterMs);
  }

  /** The peer's own time of its latest heartbeat (status shows what the peer said). */
  get lastHeartbeat(): string | undefined {
    const t = this.heartbeatAt === undefined ? Number.NaN : Date.parse(this.heartbeatAt);
    return Number.isNaN(t) ? undefined : new Date(t).toISOString();
  }

  /** Cached keys per exported kind. */
  counts(): Record<ExportKind, number> {
    const counts = Object.fromEntries(EXPORT_KINDS.map((k) => [k, 0])) as Record<ExportKind, number>;
    for (const key of this.o.cache.desiredKeys(this.cachePfx)) {
      const kind = key.slice(this.cachePfx.length).split('/', 1)[0] as ExportKind;
      if (kind in counts) counts[kind]++;
    }
    return counts;
  }

  start(): void {
    this.started = true;
    this.timer = setInterval(() => void this.publish(), 2_000);
    this.timer.unref();
    this.armStaleTimer();
  }

  /** Removes the peer's cached state if it stayed stale past the grace; publishes the sync status if it changed. */
  publish(): Promise<void> {
    const removeAfter = this.o.removeAfterMs ?? 0;
    if (removeAfter > 0 && this.stale && this.heardAt !== undefined && this.silentMs > removeAfter) {
      if (!this.removed) this.o.log.warn({ remote: this.o.remote, silentMs: this.silentMs }, 'remote stale past the grace: its cached state removed');
      this.removed = true;
      this.o.cache.replaceUnder(this.cachePfx, new Map());
    }
    this.publishing ??= this.publishUntilCurrent().finally(() => (this.publishing = undefined));
    return this.publishing;
  }

  /** Writes the status until what was written is still what it is (it may change while a write is under way). */
  private async publishUntilCurrent(): Promise<void> {
    for (;;) {
      // Only what the datapath acts on, and only when it changes: every write wakes every agent of the cluster.
      const { connected, synced } = this.o.replication;
      const stale = this.stale;
      const value = encodeValue(SyncStatus, { cluster: this.o.remote, connected, synced, stale });
      if (value === this.published) return;
      try {
        await this.o.status.put(this.o.remote, value);
        this.published = value;
        this.publishedStale = stale;
      } catch {
        return; /* the local etcd is down: published stays behind, the next tick retries */
      }
    }
  }

  stop(): void {
    this.started = false;
    if (this.timer) clearInterval(this.timer);
    clearTimeout(this.staleTimer);
    this.staleTimer = undefined;
  }

  /** Deletes the sync status (disconnect). */
  async unpublish(): Promise<void> {
    await this.o.status.remove(this.o.remote).catch(() => {
      /* the local etcd is down: the status stays behind; it only flags that peer's cached entries */
    });
  }

  private get silentMs(): number {
    return this.now() - (this.heardAt ?? 0);
  }

  private get staleAfterMs(): number {
    return this.o.staleAfterMs ?? STALE_AFTER_MS;
  }

  /**
   * Arms the timer for the moment the latest heartbeat is staleAfterMs old (stale is `silent > staleAfterMs`:
   * 1 ms past it). One timer at a time: a heartbeat while it is armed leaves it be, and when it fires early it
   * is armed again for the newer heartbeat; so a beat every 500 ms costs no timer churn.
   */
  private armStaleTimer(): void {
    if (!this.started || this.staleTimer || this.heardAt === undefined) return;
    const due = this.heardAt + this.staleAfterMs + 1 - this.now();
    this.staleTimer = setTimeout(() => {
      this.staleTimer = undefined;
      // Past the deadline of the latest heartbeat: publish (stale once synced; the tick follows a later sync).
      // Else a newer heartbeat came meanwhile: wait for its deadline.
      if (this.silentMs > this.staleAfterMs) void this.publish();
      else this.armStaleTimer();
    }, Math.max(0, due));
    this.staleTimer.unref();
  }
}
