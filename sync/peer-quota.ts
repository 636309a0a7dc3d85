// What one peer may hold in the local mesh etcd: a quota of cached keys and their bytes, and a size limit
// per value, enforced as its keys are imported (replicator.ts). Without it a peer (or whoever holds its mesh
// etcd write credentials) could fill the local etcd to its backend quota (NOSPACE), which stops every write
// of this cluster: its own export, the other peers' caches, the agents' views.
//
// The ledger counts the peer's cached keys and their bytes (cache key + value, what the local etcd holds).
// The peer's heartbeat, config and synced markers are outside it: their number is fixed by the schema, and
// the peer's health must keep working however full its quota is. Keys refused for the quota are
// remembered by name (the excess): the peer is over quota while there are any.
import type { RemoteQuota } from '../mesh/address-policy.js';
import type { ParsedKey } from '../mesh/schema/keys.js';

/** What status shows of a peer's quota. */
export interface QuotaUsage extends RemoteQuota {
  keys: number;
  bytes: number;
  /** Keys beyond the quota are refused now. */
  overQuota: boolean;
  /** How many keys are refused for the quota now. */
  refusedKeys: number;
}

/** The peer's health keys and its one trust bundle: never refused for the quota, never counted in it. */
export const outsideQuota = (parsed: ParsedKey): boolean => parsed.kind === 'config' || parsed.kind === 'heartbeat' || parsed.kind === 'synced' || parsed.kind === 'bundle';

export class PeerQuota {
  /** Export key → bytes it takes in the local etcd, for every cached key counted. */
  private readonly used = new Map<string, number>();
  private bytes = 0;
  /** Export keys refused for the quota and not deleted since. */
  private readonly excess = new Set<string>();

  constructor(readonly limits: RemoteQuota) {}

  /** Keys and bytes counted now. */
  get counted(): { keys: number; bytes: number } {
    return { keys: this.used.size, bytes: this.bytes };
  }

  get overQuota(): boolean {
    return this.excess.size > 0;
  }

  /** Forgets everything (a relist counts afresh). */
  reset(): void {
    this.used.clear();
    this.excess.clear();
    this.bytes = 0;
  }

  /**
   * Counts `key` at `bytes` if it fits, replacing what it counted before. A key not counted yet is admitted
   * only when `newKeys` (a relist past its cut, or a watch while over quota, admits none: the cached keys
   * stay the first ones in key order). Returns why it does not fit (then it is uncounted, its cached copy
   * being dropped, and remembered as excess), or undefined.
   */
  admit(key: string, bytes: number, newKeys: boolean): string | undefined {
    const before = this.used.get(key);
    const keys = this.used.size + (before === undefined ? 1 : 0);
    const total = this.bytes - (before ?? 0) + bytes;
    let why: string | undefined;
    if (before === undefined && !newKeys) why = `the peer is over its quota (${this.limits.maxKeys} keys, ${this.limits.maxBytes} bytes): keys beyond it wait until it shrinks`;
    else if (keys > this.limits.maxKeys) why = `the peer's quota of ${this.limits.maxKeys} cached keys is full`;
    else if (total > this.limits.maxBytes) why = `this key (${bytes} bytes) would take the peer's cached keys to ${total} bytes, over its quota of ${this.limits.maxBytes}`;
    if (why) {
      // A refused key loses its cached copy (replicator.ts), so it no longer counts.
      if (before !== undefined) {
        this.used.delete(key);
        this.bytes -= before;
      }
      this.excess.add(key);
      return why;
    }
    this.used.set(key, bytes);
    this.bytes = total;
    this.excess.delete(key);
    return undefined;
  }

  /** `key` is no longer cached, or gone from the peer: uncounted, and no longer excess. */
  release(key: string): void {
    const before = this.used.get(key);
    if (before !== undefined) {
      this.used.delete(key);
      this.bytes -= before;
    }
    this.excess.delete(key);
  }

  usage(): QuotaUsage {
    return { ...this.limits, keys: this.used.size, bytes: this.bytes, overQuota: this.overQuota, refusedKeys: this.excess.size };
  }
}
