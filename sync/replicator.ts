// Keeps the local cache of one peer's export equal to what the peer exports and we accept. A full list at a
// known revision, then a watch from revision + 1 (the client resumes it after a disconnect). When a watch
// ends for good (compaction, a dropped watch) the connection calls sync() again: relist and diff against
// the cache, so only real changes are written. Every key goes through the judge, then the peer's size limit
// and quota (peer-quota.ts); a refused key is counted per reason, logged, and never cached.
//
// Quota: a relist caches the peer's keys in key order until the quota is full and refuses the rest; a
// watch refuses what would exceed it, and while the peer is over quota any key not cached yet, so the cache
// stays the first keys in key order. When space frees while keys are refused (a delete, a smaller value),
// a relist follows (coalesced over quotaRelistDelayMs): the simplest way to admit, in key order, keys whose
// values we never kept.
//
// The peer's heartbeat is judged and handed to onAccepted (PeerHealth) but never cached: it changes every
// 500 ms, nothing reads a copy of it, and caching it would write the local etcd — and wake every node agent,
// which watches the whole cache prefix — on every beat of every peer. A relist removes a copy an older version
// cached.
import { REMOTE_QUOTA, type RejectReason, type Rejection, type RemoteQuota } from '../mesh/address-policy.js';
import { cachePrefix, exportPrefix, type ParsedKey } from '../mesh/schema/keys.js';
import type { Decoded } from '../mesh/schema/values.js';
import type { StateWriter } from '../mesh/state-writer.js';
import type { Replication } from './peer-connection.js';
import type { Judge } from './peer-judge.js';
import { outsideQuota, PeerQuota, type QuotaUsage } from './peer-quota.js';
import type { PeerKv, PeerSource, PeerWatch } from './peer-source.js';

type Log = { info: (o: object, m: string) => void; warn: (o: object, m: string) => void };

export interface ReplicatorOptions {
  remote: string;
  /** The local cache, written under the remote's cache prefix only. */
  cache: StateWriter;
  judge: Judge;
  log: Log;
  /** Each accepted key's decoded value (the heartbeat and config feed health and status). */
  onAccepted?: (decoded: Decoded) => void;
  /** Once per refused key (metrics). */
  onRejected?: (reason: RejectReason) => void;
  /** Clears the last error once a relist succeeded. */
  onRecovered?: () => void;
  /** After each relist is in the local etcd (publish health now, not at the next tick). */
  onSynced?: () => Promise<void>;
  /** Keys and bytes the peer may keep cached, and its largest value (default REMOTE_QUOTA). */
  quota?: Partial<RemoteQuota>;
  /** Relists (RemoteSync: the connection's relist); called when space frees while the peer is over quota. */
  relist?: () => void;
  /** Coalesces those relists: a peer churning at its quota relists at most this often (default 10 s). */
  quotaRelistDelayMs?: number;
}

export class Replicator implements Replication {
  /** The replication stream is up: listed, or the watch is connected. */
  connected = false;
  /** Relisted at least once since start. */
  synced = false;
  /** The last peer revision applied. */
  revision = 0;
  relists = 0;
  rejected = 0;
  readonly rejectedByReason: Partial<Record<RejectReason, number>> = {};
  private headRevision = 0;
  private readonly cachePfx: string;
  private readonly exportPfx: string;
  private readonly quota: PeerQuota;
  private quotaRelist?: NodeJS.Timeout;

  constructor(private readonly o: ReplicatorOptions) {
    this.cachePfx = cachePrefix(o.remote);
    this.exportPfx = exportPrefix(o.remote);
    this.quota = new PeerQuota({ ...REMOTE_QUOTA, ...o.quota });
  }

  /** The peer's quota and what its cached keys use of it. */
  get quotaUsage(): QuotaUsage {
    return this.quota.usage();
  }

  async sync(source: PeerSource, failed: (err: Error) => void): Promise<PeerWatch> {
    try {
      await this.relist(source);
      return await this.resume(source, failed);
    } catch (err) {
      this.connected = false;
      throw err;
    }
  }

  /** Watches from the last applied revision on, over `source` (also a renewed identity's: no relist). */
  resume(source: PeerSource, failed: (err: Error) => void): Promise<PeerWatch> {
    return source.watch(this.exportPfx, this.revision + 1, {
      link: (up) => (this.connected = up),
      progress: (revision) => (this.headRevision = Math.max(this.headRevision, revision)),
      put: (kv) => {
        this.quotaWatch(() => {
          const accepted = this.accept(kv);
          if (accepted) this.o.cache.set(accepted.cacheKey, accepted.value); // null (heartbeat): not cached
          // A key that fails now loses its cached copy too. Keeping the last good value would let a peer hold
          // on to state it no longer vouches for while claiming something else, and would leave the watch
          // disagreeing with what a relist (which caches accepted keys only) computes; dropping it fails
          // closed: clients lose that peer's backends for this service, never reach an address it may not claim.
          else if (kv.key.startsWith(this.exportPfx)) this.o.cache.set(this.toCache(kv.key), null);
        });
        this.applied(kv);
      },
      delete: (kv) => {
        this.quotaWatch(() => {
          this.quota.release(kv.key);
          if (kv.key.startsWith(this.exportPfx)) this.o.cache.set(this.toCache(kv.key), null);
        });
        this.applied(kv);
      },
      failed: (err) => {
        this.connected = false;
        failed(err);
      },
    });
  }

  /** How far the cache is behind the peer: revisions not yet applied plus writes not yet in the local etcd. */
  get revisionLag(): number {
    return Math.max(0, this.headRevision - this.revision) + this.o.cache.backlog;
  }

  /**
   * Checks every cached key again and drops those that fail now: this cluster's own networks grew into
   * what they claim (call after LocalNetworks changed).
   */
  revalidate(): void {
    this.quotaWatch(() => {
      for (const cacheKey of this.o.cache.desiredKeys(this.cachePfx)) {
        const value = this.o.cache.get(cacheKey);
        if (value !== undefined) this.dropIfRefused(cacheKey, value);
      }
    });
  }

  /**
   * The local etcd refused a cached value as too large (the cache writer's onRefused): counted as
   * `too-large` and dropped, like a value this side refuses.
   */
  refusedLocally(cacheKey: string, why: string): void {
    if (!cacheKey.startsWith(this.cachePfx)) return;
    this.quotaWatch(() => {
      const exportKey = this.toExport(cacheKey);
      this.quota.release(exportKey);
      this.reject(exportKey, { reason: 'too-large', detail: `the local mesh etcd refused it: ${why}` });
      this.o.cache.set(cacheKey, null);
    });
  }

  /**
   * At start, before the peer answers: drops cached keys (as the local etcd holds them) that this pin and
   * policy refuse (left by an older version or a wider pin), so an unreachable peer cannot keep them in the
   * datapath. Everything else waits for the first relist.
   */
  dropRefusedCache(cached: Map<string, string>): void {
    let dropped = 0;
    for (const [cacheKey, value] of cached) if (this.dropIfRefused(cacheKey, value)) dropped++;
    if (dropped) this.o.cache.resume();
  }

  private async relist(source: PeerSource): Promise<void> {
    const res = await source.list(this.exportPfx);
    this.connected = true;
    this.relists++;
    // This relist is the one a freed quota asked for.
    clearTimeout(this.quotaRelist);
    this.quotaRelist = undefined;
    const wasOver = this.quota.overQuota;
    this.quota.reset();
    const entries = new Map<string, string>();
    const cut = { reached: false };
    for (const kv of [...res.kvs].sort(byKey)) {
      const accepted = this.accept(kv, cut);
      if (accepted?.value != null) entries.set(accepted.cacheKey, accepted.value);
    }
    this.logQuota(wasOver);
    this.revision = res.revision;
    this.headRevision = this.revision;
    this.o.cache.replaceUnder(this.cachePfx, entries);
    this.o.cache.resume();
    await this.o.cache.idle();
    if (!this.synced) this.o.log.info({ remote: this.o.remote, keys: entries.size, revision: this.revision }, 'remote initial sync done');
    this.synced = true;
    this.o.onRecovered?.();
    await this.o.onSynced?.();
  }

  /**
   * Judges one key of the peer: its size (before parsing it), the judge, then the quota. `cut` is a relist's:
   * once one key did not fit, no later key is admitted.
   */
  private accept(kv: PeerKv, cut?: { reached: boolean }): { cacheKey: string; value: string | null } | undefined {
    const valueBytes = Buffer.byteLength(kv.value);
    if (valueBytes > this.quota.limits.maxValueBytes) {
      this.quota.release(kv.key);
      this.reject(kv.key, { reason: 'too-large', detail: `value of ${valueBytes} bytes is over the ${this.quota.limits.maxValueBytes}-byte limit per value (--remote-max-value-bytes)` });
      return undefined;
    }
    const verdict = this.o.judge(kv.key, kv.value);
    if (!verdict.ok) {
      this.quota.release(kv.key);
      this.reject(kv.key, verdict.rejection);
      return undefined;
    }
    const cacheKey = this.toCache(kv.key);
    if (!outsideQuota(verdict.parsed)) {
      const over = this.quota.admit(kv.key, Buffer.byteLength(cacheKey) + valueBytes, cut ? !cut.reached : !this.quota.overQuota);
      if (over) {
        if (cut) cut.reached = true;
        this.reject(kv.key, { reason: 'over-quota', detail: over });
        return undefined;
      }
    }
    this.o.onAccepted?.(verdict.decoded);
    return { cacheKey, value: uncached(verdict.parsed) ? null : kv.value };
  }

  private dropIfRefused(cacheKey: string, value: string): boolean {
    const exportKey = this.toExport(cacheKey);
    const verdict = this.o.judge(exportKey, value);
    if (verdict.ok) return false;
    this.quota.release(exportKey);
    this.reject(exportKey, verdict.rejection);
    this.o.cache.set(cacheKey, null);
    return true;
  }

  private reject(key: string, r: Rejection): void {
    this.rejected++;
    this.rejectedByReason[r.reason] = (this.rejectedByReason[r.reason] ?? 0) + 1;
    this.o.onRejected?.(r.reason);
    // A peer over its quota may have many keys refused at every relist: one line says so (logQuota).
    if (r.reason !== 'over-quota') this.o.log.warn({ remote: this.o.remote, key, reason: r.reason, why: r.detail }, 'rejected a remote key');
  }

  /**
   * Runs a change outside a relist and follows the quota through it: logs when the peer goes over or comes
   * back under, and asks for a relist when space freed while keys are refused.
   */
  private quotaWatch(change: () => void): void {
    const wasOver = this.quota.overQuota;
    const before = this.quota.counted;
    change();
    this.logQuota(wasOver);
    const after = this.quota.counted;
    if (this.quota.overQuota && (after.keys < before.keys || after.bytes < before.bytes)) this.scheduleQuotaRelist();
  }

  private logQuota(wasOver: boolean): void {
    const u = this.quota.usage();
    const fields = { remote: this.o.remote, keys: u.keys, bytes: u.bytes, maxKeys: u.maxKeys, maxBytes: u.maxBytes, refusedKeys: u.refusedKeys };
    if (u.overQuota && !wasOver) this.o.log.warn(fields, 'remote is over its quota: keys beyond it are refused until it shrinks (--remote-max-keys, --remote-max-bytes)');
    else if (!u.overQuota && wasOver) this.o.log.info(fields, 'remote is back within its quota');
  }

  private scheduleQuotaRelist(): void {
    if (this.quotaRelist || !this.o.relist) return;
    this.quotaRelist = setTimeout(() => {
      this.quotaRelist = undefined;
      this.o.log.info({ remote: this.o.remote }, 'space freed in the quota of a remote over it: relisting to admit the keys refused for it');
      this.o.relist?.();
    }, this.o.quotaRelistDelayMs ?? 10_000);
    this.quotaRelist.unref();
  }

  /** Stops a pending quota relist (the connection is going away). */
  stop(): void {
    clearTimeout(this.quotaRelist);
    this.quotaRelist = undefined;
  }

  private applied(kv: PeerKv): void {
    this.revision = Math.max(this.revision, kv.modRevision);
  }

  private toCache(exportKey: string): string {
    return this.cachePfx + exportKey.slice(this.exportPfx.length);
  }

  private toExport(cacheKey: string): string {
    return this.exportPfx + cacheKey.slice(this.cachePfx.length);
  }
}

/**
 * Accepted but kept out of the cache: the heartbeat (see the header), and the trust bundle, which goes to
 * the local bundles (mesh/trust-bundles.ts) through onAccepted instead: agents serve bundles from there alone.
 */
const uncached = (parsed: ParsedKey): boolean => parsed.kind === 'heartbeat' || parsed.kind === 'bundle';

/** etcd's order (bytewise; keys are ASCII, so UTF-16 order is the same): what "the first keys" means. */
const byKey = (a: PeerKv, b: PeerKv) => (a.key < b.key ? -1 : a.key > b.key ? 1 : 0);
