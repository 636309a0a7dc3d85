// Keeps the local cache of one peer's export equal to what the peer exports and we accept. A full list at a
// known revision, then a watch from revision + 1 (the client resumes it after a disconnect). When a watch
// ends for good (compaction, a dropped watch) the connection calls sync() again: relist and diff against
// the cache, so only real changes are written. Every key goes through the judge; a refused key is counted
// per reason, logged, and never cached.
import type { RejectReason, Rejection } from '../mesh/address-policy.js';
import { cachePrefix, exportPrefix } from '../mesh/schema/keys.js';
import type { Decoded } from '../mesh/schema/values.js';
import type { StateWriter } from '../mesh/state-writer.js';
import type { Replication } from './peer-connection.js';
import type { Judge } from './peer-judge.js';
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

  constructor(private readonly o: ReplicatorOptions) {
    this.cachePfx = cachePrefix(o.remote);
    this.exportPfx = exportPrefix(o.remote);
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
        const accepted = this.accept(kv);
        if (accepted) this.o.cache.set(accepted.cacheKey, accepted.value);
        // A key that fails now loses its cached copy too. Keeping the last good value would let a peer hold
        // on to state it no longer vouches for while claiming something else, and would leave the watch
        // disagreeing with what a relist (which caches accepted keys only) computes; dropping it fails closed:
        // clients lose that peer's backends for this service, never reach an address it may not claim.
        else if (kv.key.startsWith(this.exportPfx)) this.o.cache.set(this.toCache(kv.key), null);
        this.applied(kv);
      },
      delete: (kv) => {
        if (kv.key.startsWith(this.exportPfx)) this.o.cache.set(this.toCache(kv.key), null);
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
    for (const cacheKey of this.o.cache.desiredKeys(this.cachePfx)) {
      const value = this.o.cache.get(cacheKey);
      if (value !== undefined) this.dropIfRefused(cacheKey, value);
    }
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
    const entries = new Map<string, string>();
    for (const kv of res.kvs) {
      const accepted = this.accept(kv);
      if (accepted) entries.set(accepted.cacheKey, accepted.value);
    }
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

  private accept(kv: PeerKv): { cacheKey: string; value: string } | undefined {
    const verdict = this.o.judge(kv.key, kv.value);
    if (!verdict.ok) {
      this.reject(kv.key, verdict.rejection);
      return undefined;
    }
    this.o.onAccepted?.(verdict.decoded);
    return { cacheKey: this.toCache(kv.key), value: kv.value };
  }

  private dropIfRefused(cacheKey: string, value: string): boolean {
    const exportKey = this.toExport(cacheKey);
    const verdict = this.o.judge(exportKey, value);
    if (verdict.ok) return false;
    this.reject(exportKey, verdict.rejection);
    this.o.cache.set(cacheKey, null);
    return true;
  }

  private reject(key: string, r: Rejection): void {
    this.rejected++;
    this.rejectedByReason[r.reason] = (this.rejectedByReason[r.reason] ?? 0) + 1;
    this.o.onRejected?.(r.reason);
    this.o.log.warn({ remote: this.o.remote, key, reason: r.reason, why: r.detail }, 'rejected a remote key');
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
