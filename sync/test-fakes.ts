// In-memory stand-ins for what the sync units talk to, behind the project's own interfaces: a peer's mesh
// etcd as PeerSource connections (a list at a revision, watches from a revision that replay its history,
// compaction, outages, identities it stops accepting), the local mesh etcd as the StateWriter's KvBackend,
// and its leases as lease holders use etcd3 (MemoryLeaseEtcd). For the unit tests; nothing here runs in
// production.
import { EventEmitter } from 'node:events';
import type { Etcd3 } from 'etcd3';
import type { EtcdRef } from '../mesh/etcd.js';
import type { KvBackend, KvOp } from '../mesh/state-writer.js';
import type { RemoteSpec } from './peer-connection.js';
import type { PeerKv, PeerSource, PeerWatch, PrefixWatchHandlers } from './peer-source.js';

export const COMPACTED = 'etcdserver: mvcc: required revision has been compacted';

interface Watch {
  matches: (key: string) => boolean;
  next: number;
  h: PrefixWatchHandlers;
  source: MemorySource;
}

/** A peer's mesh etcd: one revision counter, a history watches replay from, compaction, outages. */
export class MemoryPeer {
  revision = 1;
  private compacted = 0;
  private offline = false;
  private readonly data = new Map<string, PeerKv>();
  private history: { type: 'put' | 'delete'; kv: PeerKv }[] = [];
  readonly watches = new Set<Watch>();
  /** The certificate of every connection made, in order. */
  readonly connections: MemorySource[] = [];
  /** Certificates this peer no longer accepts. */
  readonly refused = new Set<string>();

  connect = (spec: RemoteSpec): PeerSource => {
    const s = new MemorySource(this, spec.certPem);
    this.connections.push(s);
    return s;
  };

  put(key: string, value: string): void {
    const kv = { key, value, modRevision: ++this.revision };
    this.data.set(key, kv);
    this.history.push({ type: 'put', kv });
    this.deliver();
  }

  delete(key: string): void {
    if (!this.data.delete(key)) return;
    this.history.push({ type: 'delete', kv: { key, value: '', modRevision: ++this.revision } });
    this.deliver();
  }

  /** Forgets the history up to now: a watch from an older revision fails. */
  compact(): void {
    this.compacted = this.revision;
    this.history = this.history.filter((e) => e.kv.modRevision >= this.compacted);
  }

  /** Unreachable: calls fail, watches hear nothing (and resume where they were once it is back). */
  setOffline(offline: boolean): void {
    this.offline = offline;
    for (const w of this.watches) w.h.link(!offline);
    this.deliver();
  }

  /** Why a call over `source` fails now, if it does. */
  refusal(source: MemorySource): Error | undefined {
    if (source.closed) return new Error('client closed');
    if (this.offline) return new Error('14 UNAVAILABLE: connect ECONNREFUSED');
    if (this.refused.has(source.certPem)) return new Error('7 PERMISSION_DENIED: bad certificate');
    return undefined;
  }

  list(prefix: string): { kvs: PeerKv[]; revision: number } {
    const kvs = [...this.data.values()].filter((kv) => kv.key.startsWith(prefix)).sort((a, b) => a.key.localeCompare(b.key));
    return { kvs, revision: this.revision };
  }

  get(key: string): string | null {
    return this.data.get(key)?.value ?? null;
  }

  deliver(): void {
    if (this.offline) return;
    for (const w of [...this.watches]) {
      if (w.next < this.compacted) {
        this.watches.delete(w);
        setImmediate(() => w.h.failed(new Error(COMPACTED)));
        continue;
      }
      for (const e of this.history) {
        if (e.kv.modRevision < w.next || !w.matches(e.kv.key)) continue;
        w.h.progress(e.kv.modRevision);
        w.h[e.type](e.kv);
      }
      w.next = this.revision + 1;
    }
  }
}

class MemorySource implements PeerSource {
  closed = false;
  constructor(
    private readonly peer: MemoryPeer,
    readonly certPem: string,
  ) {}

  list(prefix: string): Promise<{ kvs: PeerKv[]; revision: number }> {
    return this.call(() => this.peer.list(prefix));
  }

  watch(prefix: string, fromRevision: number, h: PrefixWatchHandlers): Promise<PeerWatch> {
    return this.call(() => this.open({ matches: (k) => k.startsWith(prefix), next: fromRevision, h, source: this }));
  }

  get(key: string): Promise<string | null> {
    return this.call(() => this.peer.get(key));
  }

  watchKey(key: string, onPut: (value: string) => void): Promise<PeerWatch> {
    const ignore = () => undefined;
    const h = { put: (kv: PeerKv) => onPut(kv.value), delete: ignore, progress: ignore, link: ignore, failed: ignore };
    return this.call(() => this.open({ matches: (k) => k === key, next: this.peer.revision + 1, h, source: this }));
  }

  close(): void {
    this.closed = true;
    for (const w of this.peer.watches) if (w.source === this) this.peer.watches.delete(w);
  }

  /** Like a client call: fails when closed, the peer is down or refuses this identity. */
  private call<T>(fn: () => T): Promise<T> {
    const refused = this.peer.refusal(this);
    return refused ? Promise.reject(refused) : Promise.resolve(fn());
  }

  private open(w: Watch): PeerWatch {
    this.peer.watches.add(w);
    this.peer.deliver();
    return {
      cancel: () => {
        this.peer.watches.delete(w);
        return Promise.resolve();
      },
    };
  }
}

/** The local mesh etcd: what it holds and every batch written to it. */
export class MemoryKv implements KvBackend {
  readonly data = new Map<string, string>();
  readonly batches: KvOp[][] = [];
  list(prefix: string): Promise<Map<string, string>> {
    return Promise.resolve(new Map([...this.data].filter(([k]) => k.startsWith(prefix))));
  }
  apply(ops: KvOp[]): Promise<void> {
    this.batches.push(ops);
    for (const op of ops) {
      if (op.value === null) this.data.delete(op.key);
      else this.data.set(op.key, op.value);
    }
    return Promise.resolve();
  }
  writesSince(batch: number): string[] {
    return this.batches.slice(batch).flat().map((op) => `${op.key}=${op.value === null ? 'deleted' : 'set'}`).sort();
  }
}

/**
 * The local mesh etcd as a lease holder uses etcd3: lease(), put on a lease, delete, and a lease's `lost`.
 * Keys land in `kv.data` (so a test reads them where the cache goes); a key is on the lease that put it last
 * and goes when that lease is revoked or expires.
 */
export class MemoryLeaseEtcd {
  readonly leases: MemoryLease[] = [];
  /** Key → the lease it is on. */
  readonly on = new Map<string, MemoryLease>();
  /** Every put on a lease, as `key=value`. */
  readonly puts: string[] = [];
  /** While set, every call fails like an unreachable etcd. */
  down = false;
  constructor(readonly kv: MemoryKv) {}

  lease(_ttlSeconds: number, _options?: object): MemoryLease {
    const l = new MemoryLease(this);
    this.leases.push(l);
    return l;
  }

  delete() {
    return {
      key: (key: string): Promise<void> => {
        if (this.down) return Promise.reject(new Error('14 UNAVAILABLE: connect ECONNREFUSED'));
        this.on.delete(key);
        this.kv.data.delete(key);
        return Promise.resolve();
      },
    };
  }

  /** As the holders take it: a getter of the client. */
  readonly ref: EtcdRef = () => this as unknown as Etcd3;

  /** The live lease (neither revoked nor expired) `key` is on, if any. */
  leaseOf(key: string): MemoryLease | undefined {
    const l = this.on.get(key);
    return l?.state === 'alive' ? l : undefined;
  }
}

class MemoryLease extends EventEmitter {
  state: 'alive' | 'expired' | 'revoked' = 'alive';
  constructor(private readonly etcd: MemoryLeaseEtcd) {
    super();
  }

  put(key: string) {
    return {
      value: (value: string) => {
        const done = this.etcd.down || this.state !== 'alive' ? Promise.reject(new Error('etcdserver: requested lease not found')) : Promise.resolve(this.store(key, value));
        return Object.assign(done, { exec: () => done });
      },
    };
  }

  async revoke(): Promise<void> {
    this.state = 'revoked';
    this.dropKeys();
  }

  revoked(): boolean {
    return this.state !== 'alive';
  }

  /** etcd let it expire (no keep-alive for its TTL: the holder is dead or cut off): its keys go. */
  expire(): void {
    this.state = 'expired';
    this.dropKeys();
  }

  /** What etcd3 tells a live holder whose lease expired: `lost`. */
  lose(): void {
    this.expire();
    this.emit('lost', new Error('lease expired'));
  }

  private store(key: string, value: string): void {
    this.etcd.on.set(key, this);
    this.etcd.kv.data.set(key, value);
    this.etcd.puts.push(`${key}=${value}`);
  }

  private dropKeys(): void {
    for (const [key, l] of this.etcd.on) {
      if (l !== this) continue;
      this.etcd.on.delete(key);
      this.etcd.kv.data.delete(key);
    }
  }
}
